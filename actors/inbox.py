"""Webhook inbox actors: a group-commit writer and a processor.

The writer batches concurrent inserts into one statement (docs/architecture.md decision
5): under load one commit carries many webhooks, and each sender is answered
only after the commit that holds its row. When this process also runs the
processor, the insert claims the new rows too and the writer hands them over
in memory: a stored webhook reaches its payment's actor without another round
trip (no claim, no poll). The processor applies rows as they come, many
payments at once and each payment's rows in order, and polls for rows nobody
holds: stored by a process without a processor, left by a crash (their lease
lapsed), or handed over while it was full.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import trio

from actors import inbox_observer as observe
from actors.ports import InboxApplies
from actors.runtime import AskTimeout, batches
from domain.errors import Unavailable
from domain.ids import new_id
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
# A claim's lease: long enough for a row to wait its turn behind a full
# processor and be applied; a process that dies holding rows delays them by at
# most this much.
LEASE_S = 10.0
PROCESS_CONCURRENCY = 16
# Rows taken by the processor and not applied yet, above which the writer
# stores rows unclaimed (left to the poll, which takes them as room appears)
# and the poll claims no more: a claimed row waits here at most about
# BACKLOG / (apply rate) seconds, well inside its lease.
BACKLOG = 400
# The queue of taken batches: the admission above bounds it (a batch has at
# least one row), so a hand-off never finds it full.
HANDOFF_BATCHES = BACKLOG + MAX_BATCH + CLAIM_BATCH


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
    """Group commit of webhook inserts.

    Args:
      db: the open database.
      on_commit: called after a batch with new rows that were not handed over
        (wakes a processor, here or in another process).
      hand_off: this process's processor, if it runs one: new rows are claimed
        by the insert and given to it.
    """

    def __init__(self, db, on_commit, hand_off: "InboxProcessor | None" = None) -> None:
        self._db = db
        self._on_commit = on_commit
        self._hand_off = hand_off
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
            hand_off = self._hand_off is not None and self._hand_off.has_room()
            lease_s = LEASE_S if hand_off else None
            ids = [new_id("whi") for _ in batch]
            try:
                new_rows = await self._db.transaction(inbox.insert_many,
                                                      [(p.event, p.raw, p.traceparent) for p in batch], lease_s, ids)
            except Exception as exc:  # noqa: BLE001 - every sender hears about it
                for p in batch:
                    p.error = exc if isinstance(exc, Unavailable) else Unavailable("The webhook was not stored.")
                    p.done.set()
                continue
            self.batches += 1
            self.rows += len(batch)
            # A sender's webhook was new when the row with its id came back (a duplicate, of an
            # earlier webhook or of another in this batch, was skipped by the insert).
            inserted = {row["id"] for row in new_rows}
            for p, inbox_id in zip(batch, ids):
                p.new = inbox_id in inserted
                p.done.set()
            if new_rows and not (hand_off and self._hand_off.hand_off(new_rows)):
                self._on_commit()


class InboxProcessor:
    """Applies stored webhooks through the payment actors, each payment's rows oldest first.

    Rows arrive in batches (:meth:`hand_off` from the writer, or claimed by
    the poll); up to :data:`PROCESS_CONCURRENCY` payments are applied at
    once, and a row whose payment already has one in flight waits behind it.
    The order is one of dispatch, not of success: a row that fails, or cannot
    be applied yet, goes back for a later try while the payment's next rows go
    on. The appliers take rows in any order, and must: a ``dispute.closed``
    deferred until its ``dispute.opened`` arrives would otherwise hold back
    that very row.
    """

    def __init__(self, payments: InboxApplies) -> None:
        self._payments = payments
        self._wake = trio.Event()
        self._send, self._receive = trio.open_memory_channel[list[dict]](HANDOFF_BATCHES)
        # Per payment (or row, when it names none) with a row in flight: the rows waiting behind it.
        self._waiting: dict[str, list[dict]] = {}
        # Rows taken and not applied yet; the poll claims no more while it is BACKLOG or over
        # (a claim's lease could lapse while its rows wait) and is woken when it goes back under.
        self._backlog = 0
        self._poll_wants_room = False
        self.applied: dict[str, int] = defaultdict(int)

    def wake(self) -> None:
        self._wake.set()

    def has_room(self) -> bool:
        """Whether rows claimed now would be taken and applied well within their lease."""
        return self._backlog < BACKLOG

    def hand_off(self, rows: list[dict]) -> bool:
        """Take claimed rows to apply (from the writer, which must not wait).

        Returns:
          False if the queue was full (not expected after :meth:`has_room`):
          the rows stay claimed until their lease lapses, then the poll takes them.
        """
        try:
            self._send.send_nowait(rows)
        except trio.WouldBlock:
            return False
        self._backlog += len(rows)
        return True

    async def run(self) -> None:
        limiter = trio.Semaphore(PROCESS_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._poll, name="inbox:poll")
            async for rows in self._receive:
                rest = await self._set_aside_late(rows)
                for _ in range(len(rows) - len(rest)):
                    self._done_one()
                for row in rest:
                    key = row["payment_id"] or row["id"]
                    if key in self._waiting:
                        self._waiting[key].append(row)
                        continue
                    self._waiting[key] = []
                    await limiter.acquire()
                    nursery.start_soon(self._process_key, key, row, limiter, name="inbox:apply")

    async def _set_aside_late(self, rows: list[dict]) -> list[dict]:
        """The rows (handed over or claimed by the poll) less the late outcomes among them, marked
        ``ignored`` in one statement.

        A payment outcome whose payment the insert or claim read as taking no
        outcome any more (``late``: neither ``processing`` nor ``requires_action``)
        is a late or repeated one that the apply would only mark ``ignored``, one
        transaction each; gateways send several events per payment, so under load
        these are most rows. Such a payment does not go back to awaiting an
        outcome, so they need not wait behind its earlier rows.
        :func:`storage.inbox.ignore_late` decides again under its own guards; the
        rows it leaves are applied as usual.
        """
        late = [r for r in rows if r.get("late")]
        if not late:
            return rows
        try:
            ignored = await self._payments.db.transaction(inbox.ignore_late, [r["id"] for r in late],
                                                          [r["tries"] for r in late])
        except Unavailable:
            return rows  # each is applied alone, as without this
        self.applied["ignored"] += len(ignored)
        observe.ignored([r for r in late if r["id"] in ignored])
        return [r for r in rows if r["id"] not in ignored]

    async def _process_key(self, key: str, row: dict, limiter: trio.Semaphore) -> None:
        try:
            while row is not None:
                try:
                    await self._apply_one(row, row["tries"])
                finally:
                    self._done_one()
                waiting = self._waiting[key]
                row = waiting.pop(0) if waiting else None
        finally:
            self._backlog -= len(self._waiting.pop(key))  # left unapplied (cancelled): their leases lapse
            limiter.release()

    def _done_one(self) -> None:
        self._backlog -= 1
        if self._poll_wants_room and self._backlog < BACKLOG:
            self._poll_wants_room = False
            self._wake.set()

    async def _poll(self) -> None:
        """Claim rows nobody holds; right away while there is a backlog, else when woken or every POLL_S."""
        db = self._payments.db
        while True:
            self._poll_wants_room = not self.has_room()
            rows = [] if self._poll_wants_room else await db.transaction(inbox.claim, CLAIM_BATCH, LEASE_S)
            if not rows:
                with trio.move_on_after(POLL_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            self._backlog += len(rows)
            await self._send.send(rows)

    async def _apply_one(self, row: dict, claim: int | None) -> str:
        """Apply one claimed row; a failure is recorded with backoff (dead letter at the end).

        Args:
          claim: the row's ``tries`` as this process's claim left it: if another process
            claimed it since (this one was stopped past the lease), nothing is done here.
            None for an operator's replay (no claim).

        Returns:
          The row's status after this try (``pending`` when it will be retried or
          another process holds it now).
        """
        try:
            status = await self._apply(row, claim)
        except (Unavailable, AskTimeout) as exc:
            return await self._fail(row["id"], exc, claim)
        except Exception as exc:  # noqa: BLE001 - keep the row for a later try
            log.exception("applying webhook %s failed", row["id"])
            return await self._fail(row["id"], exc, claim)
        if status == inbox.RETRY:
            await self._release(row["id"], RuntimeError("payment not found yet"), claim)
            return "pending"
        if status in (inbox.DEFERRED, inbox.TAKEN_OVER):
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
        await self._apply_one(row, None)
        return await self._payments.db.transaction(inbox.get_item, inbox_id)

    async def _apply(self, row: dict, claim: int | None) -> str:
        """Through the payment's component when the webhook names a payment, else directly."""
        with observe.apply_span(row):
            status = await self._apply_untraced(row, claim)
            observe.applied(row, status)
        return status

    async def _apply_untraced(self, row: dict, claim: int | None) -> str:
        # What the insert read comes with the row once: a later try of the row reads afresh.
        seen = row.pop("seen", None)
        if row["payment_id"]:
            return await self._payments.apply_webhook(row["payment_id"], row["id"], seen, claim)
        return await self._payments.apply_stored_webhook(row["id"], seen, claim)

    async def _fail(self, inbox_id: str, exc: BaseException, claim: int | None) -> str:
        try:
            status = await self._payments.db.transaction(inbox.fail, inbox_id, f"{type(exc).__name__}: {exc}",
                                                       self._payments.settings.inbox_retry_delays, claim)
        except Unavailable:
            return "pending"  # the lease runs out by itself
        if status == "dead":
            log.error("webhook %s is a dead letter after its last retry: %s", inbox_id, exc)
        return status

    async def _release(self, inbox_id: str, exc: BaseException, claim: int | None) -> None:
        try:
            await self._payments.db.transaction(inbox.release, inbox_id, f"{type(exc).__name__}: {exc}", claim)
        except Unavailable:
            pass  # the lease runs out by itself
