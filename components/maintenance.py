"""Janitors: partitions ahead and retention, the idempotency-key purge."""

from __future__ import annotations

import logging

import trio

from actors.maintenance import PartitionMaintainer
from actors.runtime import supervise
from config import Settings
from storage import idempotency
from storage.database import Database

log = logging.getLogger("paycast.system")

# How often old idempotency keys are purged; they are kept ≥ 24 h anyway.
_PURGE_EVERY_S = 3600


class Maintenance:
    """Background upkeep of the database.

    Args:
      settings: partition and retention settings.
      db: the open database.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self._db = db
        self.partitions = PartitionMaintainer(db, settings)

    def start(self, nursery: trio.Nursery) -> None:
        """Start the janitor and the partition maintainer in ``nursery``."""
        nursery.start_soon(supervise, "janitor", self._janitor, name="actor:janitor")
        nursery.start_soon(supervise, "partitions", self.partitions.run, name="actor:partitions")

    async def _janitor(self) -> None:
        while True:
            try:
                purged = await self._db.transaction(idempotency.purge)
                if purged:
                    log.info("purged %d old idempotency keys", purged)
            except Exception as exc:  # noqa: BLE001 - the database may be down; try later
                log.warning("idempotency purge skipped: %s", exc)
            await trio.sleep(_PURGE_EVERY_S)
