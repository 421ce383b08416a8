"""The console's rollups, folded from the event log. Pure: no I/O.

A rollup row counts payments, attempts or timed attempts in one period
bucket: ``(period_s, bucket, dimension, connector, status) -> n``.

- ``payment`` rows: payments by their *current* status, in the bucket of
  the payment's ``created_at`` (connector ``""``);
- ``attempt`` rows: attempts by current status and connector, in the bucket
  of the attempt's ``created_at``;
- ``latency`` rows: attempts whose connector call has ended (status no longer
  ``started``) by the latency bucket of that call (domain.latency label, in
  ``status``). An attempt enters the count when a snapshot shows it leaving
  ``started`` and leaves it if a later snapshot shows it ``started`` again,
  like a status: so a snapshot that is older than the one before it (two
  writers, the later one slower) moves counts back and forth and never counts
  an attempt twice.

Each payment event carries the payment's snapshot; folding it against what
the payment's earlier events showed (:func:`merge`: the last status, and each
attempt as the last snapshot that showed it) moves one count from the old
status to the new one (-1, +1), and likewise for each attempt whose status
changed. Merging, rather than taking only the previous snapshot, is what keeps
an attempt counted once when a slower writer's older snapshot, which does not
show an attempt begun since, lands between two newer ones. Statuses are whatever the snapshots say: a status
added to the product later appears in the rollups with no change here.

Every delta is written to three periods: all time (``period_s`` 0, bucket
at the epoch), minutes (60) and hours (3600). Counts are sums, so the order
in which disjoint stretches of the log are folded does not matter, and a
fold of the whole log from its start gives the same rows as many small ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from domain import latency

PAYMENT, ATTEMPT, LATENCY = "payment", "attempt", "latency"
ALL_TIME, MINUTE, HOUR = 0, 60, 3600
PERIODS = (ALL_TIME, MINUTE, HOUR)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# The attempt status of a connector call still running (no latency yet).
STARTED = "started"

Key = tuple[int, dt.datetime, str, str, str]


def bucket_start(at: dt.datetime, period_s: int) -> dt.datetime:
    """Start of the ``period_s`` bucket ``at`` falls in (the epoch for all time)."""
    if period_s == ALL_TIME:
        return EPOCH
    seconds = int((at - EPOCH).total_seconds() // period_s) * period_s
    return EPOCH + dt.timedelta(seconds=seconds)


def parse_time(value: str | dt.datetime) -> dt.datetime:
    """A snapshot's ISO 8601 time (``...Z`` or with an offset) as an aware datetime."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class Tally:
    """Deltas of a stretch of the log, summed per rollup key (see the module docstring)."""

    def __init__(self) -> None:
        self.counts: dict[Key, int] = {}

    def add(self, at: dt.datetime, dimension: str, connector: str, status: str, n: int) -> None:
        """Count ``n`` (may be negative) at time ``at`` in every period."""
        for period_s in PERIODS:
            key = (period_s, bucket_start(at, period_s), dimension, connector, status)
            self.counts[key] = self.counts.get(key, 0) + n

    def fold(self, previous: Mapping | None, current: Mapping, latency_of: Mapping[str, float | None]) -> None:
        """Fold one payment snapshot against the payment's earlier ones (None: first seen).

        Args:
          previous: ``{"status", "created_at", "attempts": [{"id", "connector", "status", "created_at"}]}``,
            the :func:`merge` of the payment's earlier events, or None.
          current: the same for this event.
          latency_of: connector-call latency (ms) by attempt id, for the attempts entering or
            leaving the latency rows here (:func:`timing_changes`; missing or None: not timed).
        """
        created = parse_time(current["created_at"])
        old_status = previous["status"] if previous else None
        if old_status != current["status"]:
            if old_status is not None:
                self.add(created, PAYMENT, "", old_status, -1)
            self.add(created, PAYMENT, "", current["status"], 1)
        before = _attempt_statuses(previous)
        for attempt in current.get("attempts") or ():
            old, new = before.get(attempt["id"]), attempt["status"]
            if old == new:
                continue
            at = parse_time(attempt["created_at"])
            if old is not None:
                self.add(at, ATTEMPT, attempt["connector"], old, -1)
            self.add(at, ATTEMPT, attempt["connector"], new, 1)
            change = _timing(old) - _timing(new)
            ms = latency_of.get(attempt["id"]) if change else None
            if latency.finite(ms):
                self.add(at, LATENCY, attempt["connector"], latency.bucket_of(ms), -change)

    def rows(self) -> list[tuple]:
        """``(period_s, bucket, dimension, connector, status, n)`` of every non-zero sum."""
        return [(*key, n) for key, n in self.counts.items() if n]


def merge(previous: Mapping | None, current: Mapping) -> dict:
    """What a payment's events up to ``current`` show: its status and time, and every attempt
    any of them showed, as the latest one that shows it."""
    attempts = {a["id"]: a for a in (previous or {}).get("attempts") or ()}
    attempts.update((a["id"], a) for a in current.get("attempts") or ())
    return {"status": current["status"], "created_at": current["created_at"], "attempts": list(attempts.values())}


def _attempt_statuses(snapshot: Mapping | None) -> dict[str, str]:
    return {a["id"]: a["status"] for a in (snapshot or {}).get("attempts") or ()}


def _timing(status: str | None) -> int:
    """1 when an attempt in ``status`` counts in the latency rows (its call has ended), else 0."""
    return int(status not in (None, STARTED))


def timing_changes(previous: Mapping | None, current: Mapping) -> list[str]:
    """Ids of the attempts of ``current`` that enter or leave the latency rows against ``previous``.

    An attempt enters when it leaves ``started`` (its connector call just ended), and
    leaves only when an out-of-order snapshot shows it ``started`` again.
    """
    before = _attempt_statuses(previous)
    return [a["id"] for a in current.get("attempts") or ()
            if _timing(before.get(a["id"])) != _timing(a["status"])]
