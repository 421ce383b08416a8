"""TEST-VISIBLE journal of the calls that reach the simulated connectors.

A real gateway counts the charges it received; the race tests need the same
count from the simulators, across every process on one database. With
``PAYCAST_SIM_CALL_LOG=<path>`` set, each call a simulated connector receives
appends one JSON line to that file (``O_APPEND`` writes of one short line are
atomic, so several processes may share it). Unset — always in production —
nothing is written. No setting of config/ reads it: it is for tests only.

Line: ``{"pid", "connector", "op", "ref", "payment_id"}`` where ``op`` is
``authorize|capture|void|retrieve|refund|payout`` and ``ref`` the connector
transaction id (capture/void/retrieve) or our object id (refund/payout).
"""

from __future__ import annotations

import json
import os

ENV = "PAYCAST_SIM_CALL_LOG"
_PATH = os.environ.get(ENV) or None


def record(connector: str, op: str, *, ref: str | None = None, payment_id: str | None = None) -> None:
    """Append one call to the journal (no-op unless ``PAYCAST_SIM_CALL_LOG`` is set)."""
    if _PATH is None:
        return
    line = json.dumps({"pid": os.getpid(), "connector": connector, "op": op, "ref": ref,
                       "payment_id": payment_id}) + "\n"
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(path: str) -> list[dict]:
    """Every call recorded in the journal at ``path`` (for tests)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
