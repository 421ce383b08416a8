"""Gateway webhooks in: the inbox writer (durable store) and processor (apply)."""

from __future__ import annotations

from collections.abc import Callable

from actors.inbox import InboxProcessor, InboxWriter
from components.payments import Payments
from storage import inbox
from storage.database import Database


class Inbox:
    """The inbox surface.

    Args:
      db: the open database.
      payments: applying a matched webhook is a message to the payment's actor.
      on_stored: called after each committed batch (wakes the processor,
        here or in another process).
    """

    def __init__(self, db: Database, payments: Payments, on_stored: Callable[[], None]) -> None:
        self._db = db
        self.writer = InboxWriter(db, on_stored)
        self.processor = InboxProcessor(payments)

    async def list_items(self, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(inbox.list_items, **page)

    async def get_item(self, inbox_id: str) -> dict | None:
        return await self._db.transaction(inbox.get_item, inbox_id)
