"""What operators and clients' retries need: readiness, gauges, idempotency keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

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

    Each is a unit of work through the payments' group commit
    (:class:`actors.unit_writer.UnitWriter`): under load a request's claim and
    completion share their commit with other requests' writes; idle, each is
    its unit alone, as before.

    Args:
      write: group commit, ``write(merchant_id, fn, *args, rank=...)``
        (:meth:`components.payments.Payments.write`).
    """

    def __init__(self, write: Callable[..., Awaitable[Any]]) -> None:
        self._write = write

    async def claim(self, merchant_id: str, key: str, request_hash: str) -> idempotency.Stored | None:
        """The stored response of an earlier request with this key, else ``None`` (now claimed)."""
        return await self._write(merchant_id, idempotency.claim, merchant_id, key, request_hash, rank=0)

    async def release(self, merchant_id: str, key: str) -> None:
        await self._write(merchant_id, idempotency.release, merchant_id, key, rank=0)

    async def complete(self, merchant_id: str, key: str, status: int, body: str) -> None:
        await self._write(merchant_id, idempotency.complete, merchant_id, key, status, body, rank=0)
