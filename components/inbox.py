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
      on_stored: called after a committed batch the processor of this process
        did not take (wakes a processor, here or in another process).
      applies_here: this process runs the processor: the writer claims what it
        stores and hands it over in memory.
    """

    def __init__(self, db: Database, payments: Payments, on_stored: Callable[[], None], *,
                 applies_here: bool) -> None:
        self._db = db
        self.processor = InboxProcessor(payments)
        self.writer = InboxWriter(db, on_stored, hand_off=self.processor if applies_here else None)

    async def list_items(self, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(inbox.list_items, **page)

    async def get_item(self, inbox_id: str) -> dict | None:
        return await self._db.transaction(inbox.get_item, inbox_id)
