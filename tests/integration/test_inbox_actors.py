"""The webhook inbox actors (actors/inbox.py) in process against the real PostgreSQL:
the writer's group commit and hand-off, the processor's claim, per-payment order,
retry, release and dead letter, and the backlog bound between them.

The processor applies rows through its ``payments`` component; here that is
:class:`Payments`, which records each apply, can hold it at a gate, and answers
what the test says (``applied`` marks the row processed, as the real apply does
in its transaction). Rows, claims, failures and leases are the real tables and
statements. A task waiting for the database thread counts as blocked to trio, so
once the actors run the tests wait for what they expect (:func:`until`), not for
``wait_all_tasks_blocked``.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import trio
import trio.testing

from actors import inbox as inbox_actors
from actors.inbox import InboxProcessor, InboxWriter
from domain.webhooks import GatewayEvent
from storage import inbox
from storage.database import Database

pytestmark = pytest.mark.timeout(60)


def event(event_id: str, payment_id: str | None) -> GatewayEvent:
    return GatewayEvent(connector="mockstripe", event_id=event_id, kind="payment.succeeded",
                        connector_txn_id=f"pi_{event_id}", payment_id=payment_id, amount=1000, currency="INR",
                        status="succeeded", created=0)


async def _processed(conn, inbox_id: str) -> None:
    await conn.execute("UPDATE webhook_inbox SET status = 'applied', processed_at = now(), claimed_until = NULL"
                       " WHERE id = $1", inbox_id)


async def _rows(conn) -> list[dict]:
    return [dict(r) for r in await conn.fetch(
        "SELECT id, event_id, payment_id, status, tries, failures, last_error, claimed_until IS NOT NULL AS claimed,"
        " claimed_until > now() AS leased FROM webhook_inbox ORDER BY id")]


class Payments:
    """The processor's payments component: records ``(payment_id, inbox_id, claim)`` per
    apply, tracks how many run at once, and answers ``outcome(event_id, try)``: a
    status, or an exception to raise."""

    def __init__(self, db: Database, outcome: Callable[[str, int], object] = lambda event_id, n: "applied",
                 retry_delays: list[int] | None = None) -> None:
        self.db = db
        self.settings = types.SimpleNamespace(inbox_retry_delays=retry_delays or [0])
        self.outcome = outcome
        self.calls: list[tuple[str | None, str, int | None]] = []
        self.finished: list[str] = []
        self.running: dict[str, int] = {}
        self.most_at_once = 0
        self.most_at_once_per_payment = 0
        self.gate: trio.Event | None = None
        self._event_ids: dict[str, str] = {}

    async def apply_webhook(self, payment_id: str, inbox_id: str, seen, claim: int | None) -> str:
        return await self._apply(payment_id, inbox_id, claim)

    async def apply_stored_webhook(self, inbox_id: str, seen, claim: int | None) -> str:
        return await self._apply(None, inbox_id, claim)

    async def _apply(self, payment_id: str | None, inbox_id: str, claim: int | None) -> str:
        key = payment_id or inbox_id
        self.calls.append((payment_id, inbox_id, claim))
        self.running[key] = self.running.get(key, 0) + 1
        self.most_at_once = max(self.most_at_once, sum(self.running.values()))
        self.most_at_once_per_payment = max(self.most_at_once_per_payment, self.running[key])
        try:
            if self.gate is not None:
                await self.gate.wait()
            if inbox_id not in self._event_ids:
                self._event_ids[inbox_id] = await self.db.run(
                    lambda conn: conn.fetchval("SELECT event_id FROM webhook_inbox WHERE id = $1", inbox_id))
            tries = sum(1 for _, i, _ in self.calls if i == inbox_id)
            answer = self.outcome(self._event_ids[inbox_id], tries)
            if isinstance(answer, BaseException):
                raise answer
            if answer == "applied":
                await self.db.transaction(_processed, inbox_id)
            self.finished.append(inbox_id)
            return answer
        finally:
            self.running[key] -= 1


async def until(predicate: Callable[[], object], timeout: float = 15) -> None:
    """Wait (bounded) until ``predicate()`` holds, letting the actors run."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def until_rows(db: Database, predicate: Callable[[list[dict]], object], timeout: float = 15) -> list[dict]:
    """Wait (bounded) until the inbox rows satisfy ``predicate``; the rows. For what the
    processor writes after an apply returned (a failure, a release)."""
    with trio.fail_after(timeout):
        while not predicate(rows := await db.run(_rows)):
            await trio.sleep(0.02)
    return rows


async def test_the_writer_commits_a_burst_together_and_hands_new_rows_over(db, monkeypatch):
    monkeypatch.setattr(inbox_actors, "POLL_S", 3600)  # only the hand-off can bring rows
    payments = Payments(db)
    processor = InboxProcessor(payments)
    woken: list[int] = []
    writer = InboxWriter(db, lambda: woken.append(1), hand_off=processor)
    answers: dict[str, bool] = {}

    async def store(event_id: str, payment_id: str | None) -> None:
        answers[event_id] = await writer.store(event(event_id, payment_id), "{}", timeout=10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run)
        async with trio.open_nursery() as senders:
            for event_id, payment_id in [("e1", "pay_a"), ("e2", "pay_a"), ("e3", "pay_b"), ("e4", None)]:
                senders.start_soon(store, event_id, payment_id)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == {}  # nobody is answered before the commit
            nursery.start_soon(writer.run)
        assert answers == {"e1": True, "e2": True, "e3": True, "e4": True}
        assert writer.batches == 1  # one insert statement, one commit
        await until(lambda: len(payments.finished) == 4)
        assert await writer.store(event("e1", "pay_a"), "{}", timeout=10) is False  # a duplicate
        nursery.cancel_scope.cancel()
    assert woken == []  # every new row was handed over: nobody needed waking
    rows = await db.run(_rows)
    assert {r["event_id"]: (r["status"], r["tries"]) for r in rows} == {
        "e1": ("applied", 1), "e2": ("applied", 1), "e3": ("applied", 1), "e4": ("applied", 1)}
    # Claimed by the insert itself: each apply carries that claim (tries = 1).
    assert sorted(claim for *_, claim in payments.calls) == [1, 1, 1, 1]
    assert processor.applied["applied"] == 4


async def test_a_duplicate_in_the_same_batch_as_new_webhooks_is_answered_as_a_duplicate(db, monkeypatch):
    """One batch holding a webhook already stored, a new one and the new one again: each
    sender hears whether its own copy was stored, not whether the batch stored anything."""
    monkeypatch.setattr(inbox_actors, "POLL_S", 3600)
    writer = InboxWriter(db, lambda: None)
    answers: list[tuple[str, bool]] = []

    async def store(event_id: str) -> None:
        answers.append((event_id, await writer.store(event(event_id, "pay_a"), "{}", timeout=10)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await store("old")
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as senders:
            for event_id in ("old", "fresh", "fresh"):
                senders.start_soon(store, event_id)
                await trio.testing.wait_all_tasks_blocked()  # queued in this order
            nursery.start_soon(writer.run)
        nursery.cancel_scope.cancel()
    assert writer.batches == 2
    # Senders are woken in any order; which copy of "fresh" was stored first is the insert's.
    assert sorted(answers) == [("fresh", False), ("fresh", True), ("old", False), ("old", True)]


async def test_a_payments_rows_apply_one_at_a_time_oldest_first_and_payments_at_once(db, monkeypatch):
    monkeypatch.setattr(inbox_actors, "POLL_S", 0.05)
    stored = await db.transaction(inbox.insert_many, [
        (event(f"a{i}", "pay_a"), "{}", None) for i in range(3)] + [
        (event(f"b{i}", "pay_b"), "{}", None) for i in range(2)] + [
        (event("none", None), "{}", None)])
    assert all(r["tries"] == 0 for r in stored)  # stored unclaimed: the poll claims them
    payments = Payments(db)
    payments.gate = trio.Event()
    processor = InboxProcessor(payments)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run)
        await until(lambda: len(payments.calls) == 3)
        await trio.sleep(0.2)  # several polls: nothing else starts while these are held
        # One row per payment at a time (pay_a, pay_b and the row that names no payment).
        assert {p for p, *_ in payments.calls} == {"pay_a", "pay_b", None}
        assert len(payments.calls) == 3
        payments.gate.set()
        await until(lambda: len(payments.finished) == 6)
        nursery.cancel_scope.cancel()
    assert payments.most_at_once == 3
    assert payments.most_at_once_per_payment == 1
    rows_a = sorted(r["id"] for r in stored if r["payment_id"] == "pay_a")
    assert [i for p, i, _ in payments.calls if p == "pay_a"] == rows_a  # oldest (lowest id) first
    assert [r["status"] for r in await db.run(_rows)] == ["applied"] * 6
    assert all(claim == 1 for *_, claim in payments.calls)  # one claim each, by the poll


async def test_a_failing_apply_is_retried_on_schedule_then_a_dead_letter(db, monkeypatch):
    monkeypatch.setattr(inbox_actors, "POLL_S", 0.05)
    await db.transaction(inbox.insert_many, [(event("bad", "pay_bad"), "{}", None),
                                             (event("good", "pay_good"), "{}", None)])
    payments = Payments(db, lambda event_id, n: RuntimeError("boom") if event_id == "bad" else "applied",
                        retry_delays=[0, 0])
    processor = InboxProcessor(payments)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run)
        await until_rows(db, lambda rows: {r["event_id"]: r["status"] for r in rows} == {"bad": "dead",
                                                                                          "good": "applied"})
        await trio.sleep(0.3)  # more polls: a dead letter is not claimed again
        nursery.cancel_scope.cancel()
    rows = {r["event_id"]: r for r in await db.run(_rows)}
    assert [(p, claim) for p, _, claim in payments.calls if p == "pay_bad"] == [
        ("pay_bad", 1), ("pay_bad", 2), ("pay_bad", 3)]  # each try under a new claim
    bad = rows["bad"]
    assert bad["status"] == "dead"
    assert bad["failures"] == 3  # the schedule's two retries, then the last failure
    assert bad["last_error"] == "RuntimeError: boom"
    assert not bad["claimed"]
    assert rows["good"]["status"] == "applied"  # a failing row holds up no other payment
    assert processor.applied["applied"] == 1


async def test_a_row_that_overtook_its_payment_is_released_not_failed(db, monkeypatch):
    monkeypatch.setattr(inbox_actors, "POLL_S", 0.05)
    await db.transaction(inbox.insert_many, [(event("early", "pay_early"), "{}", None)])

    def outcome(event_id: str, n: int) -> str:
        if n == 1:
            payments.gate = trio.Event()  # the next try waits until the release is looked at
            return inbox.RETRY
        return "applied"

    payments = Payments(db, outcome)
    processor = InboxProcessor(payments)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run)
        (row,) = await until_rows(db, lambda rows: rows[0]["last_error"] is not None)
        # Given back for a second, not counted as a failure.
        assert row["status"] == "pending"
        assert row["failures"] == 0
        assert row["leased"]
        assert row["last_error"] == "RuntimeError: payment not found yet"
        payments.gate.set()
        await until(lambda: len(payments.finished) == 2)  # claimed again once that second is over
        nursery.cancel_scope.cancel()
    (row,) = await db.run(_rows)
    assert row["status"] == "applied"
    assert row["tries"] == 2
    assert row["failures"] == 0


async def test_a_full_backlog_leaves_new_rows_to_the_poll(db, monkeypatch):
    """The bound between writer and processor: while the processor holds BACKLOG
    rows or more, the writer stores rows unclaimed and wakes the poll, which
    claims nothing until there is room again."""
    monkeypatch.setattr(inbox_actors, "POLL_S", 3600)
    monkeypatch.setattr(inbox_actors, "BACKLOG", 0)
    payments = Payments(db)
    processor = InboxProcessor(payments)
    writer = InboxWriter(db, processor.wake, hand_off=processor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run)
        nursery.start_soon(writer.run)
        assert await writer.store(event("e1", "pay_a"), "{}", timeout=10) is True
        await trio.sleep(0.3)
        (row,) = await db.run(_rows)
        assert row["tries"] == 0  # stored unclaimed
        assert not row["claimed"]
        assert payments.calls == []  # woken, the poll still takes nothing: no room
        monkeypatch.setattr(inbox_actors, "BACKLOG", 400)
        processor.wake()
        await until(lambda: len(payments.finished) == 1)
        nursery.cancel_scope.cancel()
    (row,) = await db.run(_rows)
    assert row["status"] == "applied"
    assert row["tries"] == 1


async def test_late_outcomes_handed_over_are_ignored_together_and_the_rest_applied(db, monkeypatch):
    """Rows whose insert read their payment settled are marked ``ignored`` in one statement by the
    processor, never applied one by one — a simulator's and a real connector account's alike; a
    payment still awaiting its outcome is applied as usual."""
    from domain.payments import OutcomeKind
    from tests.integration.storage_api import StorageAPI

    monkeypatch.setattr(inbox_actors, "POLL_S", 3600)  # only the hand-off brings rows
    store = StorageAPI(db)
    merchant = await store.create_merchant()
    settled, waiting = await store.create_payment(merchant), await store.create_payment(merchant)
    for pay, kind in ((settled, OutcomeKind.SUCCEEDED), (waiting, OutcomeKind.PENDING)):
        attempt = await store.begin_attempt(merchant, pay["id"])
        await store.settle(merchant, pay["id"], attempt, kind, f"pi_{pay['id']}")
    statements: list[str] = []
    real_ignore_late = inbox.ignore_late

    async def counted_ignore_late(conn, ids, claims):
        statements.append("ignore_late")
        return await real_ignore_late(conn, ids, claims)

    monkeypatch.setattr(inbox, "ignore_late", counted_ignore_late)
    payments = Payments(db)
    processor = InboxProcessor(payments)
    writer = InboxWriter(db, lambda: None, hand_off=processor)

    def outcome(event_id: str, payment_id: str, account_id: str | None = None) -> GatewayEvent:
        return GatewayEvent(connector="stripe" if account_id else "mockstripe", event_id=event_id,
                            kind="payment.succeeded", connector_txn_id=f"pi_{payment_id}", payment_id=payment_id,
                            amount=1000, currency="INR", status="succeeded", created=0, account_id=account_id)

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as senders:
            for i in range(3):
                senders.start_soon(writer.store, outcome(f"late{i}", settled["id"]), "{}", 10)
            senders.start_soon(writer.store, outcome("late_real", settled["id"], "mca_late"), "{}", 10)
            senders.start_soon(writer.store, outcome("fresh", waiting["id"]), "{}", 10)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(processor.run)
            nursery.start_soon(writer.run)
        await until(lambda: processor.applied["ignored"] == 4 and len(payments.finished) == 1)
        nursery.cancel_scope.cancel()
    assert writer.batches == 1
    assert statements == ["ignore_late"]  # the four late rows, together
    assert [p for p, *_ in payments.calls] == [waiting["id"]]  # only the payment awaiting its outcome
    rows = {r["event_id"]: r["status"] for r in await db.run(_rows)}
    assert rows == {"late0": "ignored", "late1": "ignored", "late2": "ignored", "late_real": "ignored",
                    "fresh": "applied"}
