"""What operators and clients' retries need: readiness, gauges, idempotency keys."""

from __future__ import annotations

from pg import migrate
from storage import idempotency, operations
from storage.database import Database


class Operations:
    """Readiness and the database-side gauges of ``/metrics``.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def migrations_current(self) -> bool:
        """Whether every migration is applied (``/readyz``)."""
        return await self._db.run(migrate.is_current)

    async def counts(self) -> dict:
        """Payments by status, inbox and delivery backlogs (see :func:`storage.operations.counts`)."""
        return await self._db.run(operations.counts)


class IdempotencyKeys:
    """``Idempotency-Key``: claim a key, then complete it with the response or release it.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, merchant_id: str, key: str, request_hash: str):
        """The stored response of an earlier request with this key, else ``None`` (now claimed)."""
        return await self._db.transaction(idempotency.claim, merchant_id, key, request_hash)

    async def release(self, merchant_id: str, key: str) -> None:
        await self._db.transaction(idempotency.release, merchant_id, key)

    async def complete(self, merchant_id: str, key: str, status: int, body: str) -> None:
        await self._db.transaction(idempotency.complete, merchant_id, key, status, body)
