"""``actor:rollups``: keeps the console's rollups up with the event log (worker role).

At start it drops the cursors of merchants whose rollups were lost (a
cursor past seq 0 with no all-time row left), so those are rebuilt from the
log; then, every ``PAYCAST_ROLLUP_INTERVAL_S``, it folds each merchant whose
log is ahead of its cursor (storage/rollups.py), in batches, until none is.
A worker that was down catches up exactly from where the cursors stand.
Several workers may run it; a merchant is folded by one at a time.
"""

from __future__ import annotations

import logging

import trio

from storage import rollups
from storage.database import Database

log = logging.getLogger("paycast.rollups")
# Merchants looked at per round; the most behind first.
MERCHANTS_PER_ROUND = 100
# Batches folded for one merchant before the next gets its turn (a merchant far behind, e.g. being
# rebuilt, does not hold the others' rollups back for the whole rebuild).
BATCHES_PER_TURN = 20


class RollupFolder:
    """Args:
      db: the open database.
      interval_s: pause between rounds when every merchant is up to date.
    """

    def __init__(self, db: Database, interval_s: float) -> None:
        self._db = db
        self._interval_s = interval_s
        # Snapshots this process's folds left: a payment's later events then fold without re-reading its earlier ones.
        self._known = rollups.Known()
        self.folded = 0  # events folded since start (for /debug and tests)

    async def run(self) -> None:
        """Rebuild lost rollups, then fold forever (cancel to stop)."""
        lost = await self._db.run(rollups.drop_lost)
        if lost:
            log.warning("rollups of %d merchant(s) were lost; rebuilding them from the event log", lost)
        while True:
            if not await self.round():
                await trio.sleep(self._interval_s)

    async def round(self) -> int:
        """Fold every merchant that is behind, batch by batch; returns the number of events folded."""
        total = 0
        for merchant_id in await self._db.run(rollups.behind, MERCHANTS_PER_ROUND):
            for _ in range(BATCHES_PER_TURN):
                folded = await self._db.transaction(rollups.fold, merchant_id, rollups.BATCH, self._known)
                if not folded.moved:
                    break
                self._known.keep(merchant_id, folded)  # committed
                total += folded.moved
        self.folded += total
        return total
