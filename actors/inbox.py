"""Webhook inbox actors: a group-commit writer and a processor.

The writer batches concurrent inserts into one transaction (DESIGN.md decision
5): under load one commit carries many webhooks, and each sender is answered
only after the commit that holds its row. The processor drains unprocessed
rows into payment actors, and re-drives what a crash or another process left.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import trio

from actors import inbox_observer as observe
from actors.runtime import AskTimeout, batches
from domain.errors import Unavailable
from domain.webhooks import GatewayEvent
from storage import inbox
from telemetry import tracing

log = logging.getLogger("paycast.inbox")
# Enough to absorb a burst while one batch commits; senders wait beyond it.
WRITER_QUEUE = 1024
# Most rows in one insert: keeps a batch's commit short.
MAX_BATCH = 256
# How often the processor looks for rows without being woken (rows from other
# processes, or left by a crash).
POLL_S = 1.0
CLAIM_BATCH = 200
LEASE_S = 10.0
PROCESS_CONCURRENCY = 16


@dataclass
class _Pending:
    event: GatewayEvent
    raw: str
    done: trio.Event = field(default_factory=trio.Event)
    # Stored with the row: the apply (later, maybe in another process) joins the receiving request's trace.
    traceparent: str | None = field(default_factory=tracing.current_traceparent)
    new: bool = False
    error: BaseException | None = None


class InboxWriter:
    """Group commit of webhook inserts."""

    def __init__(self, db, on_commit) -> None:
        self._db = db
        self._on_commit = on_commit
        self._send, self._receive = trio.open_memory_channel[_Pending](WRITER_QUEUE)
        self.batches = 0
        self.rows = 0

    async def store(self, event: GatewayEvent, raw: str, timeout: float) -> bool:
        """Store one webhook durably.

        Returns:
          True if it was new, False for a duplicate.

        Raises:
          Unavailable: not committed within ``timeout`` (the sender should retry).
        """
        pending = _Pending(event, raw)
        with trio.move_on_after(timeout):
            await self._send.send(pending)
            await pending.done.wait()
        if not pending.done.is_set():
            raise AskTimeout("The webhook could not be stored in time; retry.")
        if pending.error is not None:
            raise pending.error
        return pending.new

    async def run(self) -> None:
        async for batch in batches(self._receive, MAX_BATCH):
            try:
                new_ids = await self._db.transaction(inbox.insert_many,
                                                     [(p.event, p.raw, p.traceparent) for p in batch])
            except Exception as exc:  # noqa: BLE001 - every sender hears about it
                for p in batch:
                    p.error = exc if isinstance(exc, Unavailable) else Unavailable("The webhook was not stored.")
                    p.done.set()
                continue
            self.batches += 1
            self.rows += len(batch)
            # Rows come back by id; match them to senders by (connector, event id) order.
            new_count = len(new_ids)
            seen: set[tuple[str, str]] = set()
            for p in batch:
                key = (p.event.connector, p.event.event_id)
                p.new = new_count > 0 and key not in seen
                seen.add(key)
                p.done.set()
            if new_ids:
                self._on_commit()


class InboxProcessor:
    """Applies stored webhooks through the payment actors, oldest first per payment."""

    def __init__(self, payments) -> None:
        self._payments = payments
        self._wake = trio.Event()
        self.applied: dict[str, int] = defaultdict(int)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        db = self._payments.db
        while True:
            rows = await db.transaction(inbox.claim, CLAIM_BATCH, LEASE_S)
            if not rows:
                with trio.move_on_after(POLL_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            late = await db.transaction(inbox.ignore_late, [r["id"] for r in rows])
            self.applied["ignored"] += len(late)
            observe.ignored([r for r in rows if r["id"] in late])
            groups: dict[str, list[dict]] = defaultdict(list)
            for row in (r for r in rows if r["id"] not in late):
                groups[row["payment_id"] or row["id"]].append(row)
            limiter = trio.Semaphore(PROCESS_CONCURRENCY)
            async with trio.open_nursery() as nursery:
                for group in groups.values():
                    await limiter.acquire()
                    nursery.start_soon(self._process_group, group, limiter, name="inbox:apply")

    async def _process_group(self, group: list[dict], limiter: trio.Semaphore) -> None:
        try:
            for row in group:
                await self._apply_one(row)
        finally:
            limiter.release()

    async def _apply_one(self, row: dict) -> str:
        """Apply one claimed row; a failure is recorded with backoff (dead letter at the end).

        Returns:
          The row's status after this try (``pending`` when it will be retried).
        """
        try:
            status = await self._apply(row)
        except (Unavailable, AskTimeout) as exc:
            return await self._fail(row["id"], exc)
        except Exception as exc:  # noqa: BLE001 - keep the row for a later try
            log.exception("applying webhook %s failed", row["id"])
            return await self._fail(row["id"], exc)
        if status == inbox.RETRY:
            await self._release(row["id"], RuntimeError("payment not found yet"))
            return "pending"
        if status == inbox.DEFERRED:
            return "pending"
        self.applied[status] += 1
        return status

    async def replay(self, inbox_id: str) -> dict | None:
        """``POST /admin/inbox/{id}/replay``: back to ``pending``, then applied now.

        Returns:
          The item after this try (``applied`` when the cause was fixed, else
          ``pending`` with its new ``last_error``), or None if there is no such item.

        Raises:
          StateError: the item was already applied.
        """
        row = await self._payments.db.transaction(inbox.reopen, inbox_id)
        if row is None:
            return None
        await self._apply_one(row)
        return await self._payments.db.transaction(inbox.get_item, inbox_id)

    async def _apply(self, row: dict) -> str:
        """Through the payment's actor when the webhook names a payment, else directly."""
        with observe.apply_span(row):
            status = await self._apply_untraced(row)
            observe.applied(row, status)
        return status

    async def _apply_untraced(self, row: dict) -> str:
        from actors.payment_messages import ApplyWebhook

        if row["payment_id"]:
            return await self._payments.ask_payment(row["payment_id"], ApplyWebhook(row["id"]))
        return await self._payments.db.transaction(inbox.apply, row["id"],
                                                 self._payments.settings.webhook_unmatched_grace_s)

    async def _fail(self, inbox_id: str, exc: BaseException) -> str:
        try:
            status = await self._payments.db.transaction(inbox.fail, inbox_id, f"{type(exc).__name__}: {exc}",
                                                       self._payments.settings.inbox_retry_delays)
        except Unavailable:
            return "pending"  # the lease runs out by itself
        if status == "dead":
            log.error("webhook %s is a dead letter after its last retry: %s", inbox_id, exc)
        return status

    async def _release(self, inbox_id: str, exc: BaseException) -> None:
        try:
            await self._payments.db.transaction(inbox.release, inbox_id, f"{type(exc).__name__}: {exc}")
        except Unavailable:
            pass  # the lease runs out by itself
