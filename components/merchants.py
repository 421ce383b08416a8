"""Merchants: creation (admin) and API-key lookup (authentication)."""

from __future__ import annotations

from storage import merchants
from storage.database import Database


class Merchants:
    """The merchant surface.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str) -> tuple[dict, str]:
        """A new merchant and its API key (shown once)."""
        return await self._db.transaction(merchants.create, name)

    async def by_key_hash(self, key_hash: str) -> dict | None:
        """The merchant holding the API key with this hash, if any."""
        return await self._db.transaction(merchants.by_key_hash, key_hash)
