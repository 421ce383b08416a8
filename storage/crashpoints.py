"""TEST-ONLY crash points inside units of work.

Off in production: nothing happens unless the environment variable
``PAYCAST_TEST_CRASH_POINT`` is set, and no setting of config/ reads it. The
crash tests (tests/e2e/test_crash_points.py) start a server with it set and
expect the process to die with SIGKILL at that point, as if the machine lost
power, then restart on the same database and check that every acknowledged
write survived and that ``run.py check`` passes.

Value: ``<point>`` or ``<point>:<n>`` — die at that point of the n-th
(default 1st) transactional unit of work of this process that wrote
something. Points:

- ``before_commit``: the unit of work's statements ran, its transaction is
  not committed (everything must roll back; nothing was acknowledged);
- ``after_commit``: committed, the caller has not been answered yet (the
  write is durable but unacknowledged; it must be consistent on its own).

The points are reached from storage/database.py's unit-of-work runner, for
units run with ``Database.transaction`` (``Database.run`` units are not counted).
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "PAYCAST_TEST_CRASH_POINT"
POINTS = frozenset({"before_commit", "after_commit"})


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, nth = value.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point (known: {sorted(POINTS)})")
    return point, int(nth or 1)


_ARMED = _parse(os.environ.get(ENV))
_count = 0


def armed() -> bool:
    """Whether a crash point is armed (units that skip BEGIN/COMMIT then take one)."""
    return _ARMED is not None


async def before_commit(conn) -> int | None:
    """Called inside a unit of work's transaction, just before COMMIT.

    Only units of work that wrote something count (read-only polls of the
    background loops would otherwise make "the n-th" meaningless); finding out
    costs one query, and only when a crash point is armed.

    Returns:
      This unit's number among the writing ones (None: it wrote nothing, or no
      crash point is armed); pass it to :func:`after_commit`. Units run
      concurrently, so the number is carried, not re-read from the counter.
    """
    if _ARMED is None:
        return None
    if not await conn.fetchval("SELECT pg_current_xact_id_if_assigned() IS NOT NULL"):
        return None
    global _count
    _count += 1
    _maybe_die("before_commit", _count)
    return _count


def after_commit(ordinal: int | None) -> None:
    """Called after COMMIT, before the caller is answered."""
    if ordinal is not None:
        _maybe_die("after_commit", ordinal)


def _maybe_die(point: str, ordinal: int) -> None:
    if _ARMED == (point, ordinal):
        sys.stderr.write(f"crash point {point} reached at write #{ordinal}: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
