"""``actor:partitions``: keeps the bounded tables bounded (worker role).

Every ``PAYCAST_PARTITION_MAINTENANCE_S`` (and at start) it makes the time
partitions ``PAYCAST_PARTITIONS_AHEAD`` periods ahead and drops those past
their table's retention (``PAYCAST_RETENTION_*``; realtime messages:
``PAYCAST_REALTIME_RETENTION_S``). Several workers may run it: one at a time
does the work (an advisory lock), the others skip the round.
"""

from __future__ import annotations

import datetime as dt
import logging

import trio

from domain.errors import Unavailable
from storage import partitions

log = logging.getLogger("paycast.partitions")
# A round that failed (database down, a lock not granted in time) is retried sooner.
RETRY_S = 60.0


def retention_of(settings) -> dict[str, dt.timedelta | None]:
    """Per bounded table, how long its rows are kept (None: for ever)."""

    def days(n: int) -> dt.timedelta | None:
        return dt.timedelta(days=n) if n else None

    return {
        partitions.EVENTS.name: days(settings.retention_events_days),
        partitions.INBOX.name: days(settings.retention_inbox_days),
        partitions.REALTIME.name: dt.timedelta(seconds=settings.realtime_retention_s),
        partitions.ATTEMPTS.name: days(settings.retention_webhook_attempts_days),
    }


class PartitionMaintainer:
    """Args:
      db: the open database.
      settings: the process settings.
    """

    def __init__(self, db, settings) -> None:
        self._db = db
        self._settings = settings
        self.rounds = 0

    async def run_once(self, now: dt.datetime | None = None) -> dict | None:
        """One round now; returns what was done (None: another process did it)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        report = await self._db.run(partitions.maintain, now, retention_of(self._settings),
                                    self._settings.partitions_ahead)
        self.rounds += 1
        for table, done in (report or {}).items():
            if done["created"] or done["dropped"] or done["purged"]:
                log.info("partitions of %s: created %s, dropped %s, %d rows moved, %d purged", table,
                         done["created"], done["dropped"], done["moved"], done["purged"])
        return report

    async def run(self) -> None:
        while True:
            retry = min(RETRY_S, self._settings.partition_maintenance_s)
            try:
                report = await self.run_once()
                delay = self._settings.partition_maintenance_s
                busy = [name for done in (report or {}).values() for name in done["busy"]]
                if busy:
                    # Routine under load (a transaction held the table past the
                    # lock timeout), not a fault: rows meanwhile land in the
                    # default partition and move when the partition is made.
                    log.warning("partitions %s not changed: their tables were in use past %s; retried in %.0f s",
                                busy, partitions.LOCK_TIMEOUT, retry)
                    delay = retry
            except Unavailable as exc:
                log.warning("partition maintenance skipped: %s", exc)
                delay = retry
            except Exception:  # noqa: BLE001 - a fault to see; the next round tries again
                log.exception("partition maintenance failed")
                delay = retry
            await trio.sleep(delay)
