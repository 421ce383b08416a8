"""Each storage unit of work against the real PostgreSQL, with its guard:
the right state (it moves), a wrong state (the typed error, nothing written),
and concurrent callers (exactly one wins; the losers get the typed error).

Storage is called only through tests/integration/storage_api.py, so a rewrite
of a storage function (single-statement units of work, docs/architecture.md decision 7) adapts that
one file and keeps these tests as its safety net, function by function.
Concurrency is real: each caller is its own crossing to the loop thread, on
its own pooled connection, started together in one trio nursery.
"""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest
import trio

from domain.errors import (IdempotencyKeyInUse, IdempotencyKeyReused, InsufficientFunds, PaycastError,
                           RefundExceedsPayment, StateError)
from domain.payments import Outcome, OutcomeKind
from domain.webhooks import GatewayEvent
from pg import migrate
from storage import webhook_deliveries  # the retry schedule reaches delivery SQL as session settings
from storage.database import Database
from tests.integration.storage_api import StorageAPI


@pytest.fixture(scope="module")
def migrated_dsn(new_database):
    dsn = new_database("paycast_storage_units")

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()

    asyncio.run(run())
    return dsn


@pytest.fixture
async def store(migrated_dsn):
    db = Database(migrated_dsn, pool_size=12, session_settings=webhook_deliveries.session_settings([0, 5]))
    await db.open()
    try:
        yield StorageAPI(db)
    finally:
        await db.close()


@pytest.fixture
async def merchant(store):
    return await store.create_merchant()


async def together(n: int, fn) -> list[object]:
    """Run ``fn(i)`` for i in range(n) concurrently; each result or the PaycastError it raised."""
    results: list[object] = [None] * n

    async def one(i: int) -> None:
        try:
            results[i] = await fn(i)
        except PaycastError as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


def _wins(results: list[object]) -> list[object]:
    return [r for r in results if not isinstance(r, PaycastError)]


async def _types(store, merchant, object_id) -> list[str]:
    return [e["type"] for e in await store.events(merchant, object_id)]


# ---- begin_attempt: requires_confirmation → processing


async def test_begin_attempt_moves_a_new_payment_to_processing(store, merchant):
    pay = await store.create_payment(merchant)
    await store.begin_attempt(merchant, pay["id"])
    got = await store.payment(merchant, pay["id"])
    assert got["status"] == "processing"
    assert [a["status"] for a in got["attempts"]] == ["started"]


async def test_begin_attempt_refuses_a_payment_already_processing(store, merchant):
    pay = await store.create_payment(merchant)
    await store.begin_attempt(merchant, pay["id"])
    with pytest.raises(StateError):
        await store.begin_attempt(merchant, pay["id"])
    assert len((await store.payment(merchant, pay["id"]))["attempts"]) == 1


async def test_concurrent_begin_attempts_start_exactly_one(store, merchant):
    pay = await store.create_payment(merchant)
    results = await together(8, lambda _: store.begin_attempt(merchant, pay["id"]))
    assert len(_wins(results)) == 1, results
    assert all(isinstance(r, StateError) for r in results if r not in _wins(results))
    assert len((await store.payment(merchant, pay["id"]))["attempts"]) == 1


# ---- settle: processing → terminal, once


async def test_settle_moves_processing_to_succeeded_with_one_event(store, merchant):
    pay = await store.create_payment(merchant)
    attempt = await store.begin_attempt(merchant, pay["id"])
    got = await store.settle(merchant, pay["id"], attempt, OutcomeKind.SUCCEEDED, "pi_unit1s")
    assert got["status"] == "succeeded"
    assert got["amount_received"] == 1000
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.succeeded"]


async def test_a_late_settle_never_moves_a_terminal_payment(store, merchant):
    pay = await store.create_payment(merchant)
    attempt = await store.begin_attempt(merchant, pay["id"])
    await store.settle(merchant, pay["id"], attempt, OutcomeKind.DECLINED, "pi_unit2d")
    got = await store.settle(merchant, pay["id"], attempt, OutcomeKind.SUCCEEDED, "pi_unit2s")
    assert got["status"] == "failed"
    assert got["amount_received"] == 0
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.failed"]


async def test_concurrent_settles_write_one_terminal_event(store, merchant):
    pay = await store.create_payment(merchant)
    attempt = await store.begin_attempt(merchant, pay["id"])
    kinds = [OutcomeKind.SUCCEEDED, OutcomeKind.DECLINED] * 4
    await together(8, lambda i: store.settle(merchant, pay["id"], attempt, kinds[i], f"pi_unit3{i}s"))
    got = await store.payment(merchant, pay["id"])
    terminal = [t for t in await _types(store, merchant, pay["id"]) if t != "payment.created"]
    assert terminal == [f"payment.{got['status']}"], terminal


# ---- reconciliation: overdue payments leased to one worker, flagged for review once


async def test_concurrent_reconcilers_lease_each_overdue_payment_once(store, merchant):
    mine = set()
    for _ in range(12):
        pay = await store.create_payment(merchant)
        await store.begin_attempt(merchant, pay["id"], deadline_s=0.0)
        mine.add(pay["id"])
    results = await together(4, lambda _: store.lease_overdue(5))
    leased = [pid for r in results for pid in r]
    assert len(leased) == len(set(leased)), results
    assert mine <= set(leased), results  # 4 × 5 leases cover the 12 overdue payments
    assert mine.isdisjoint(await store.lease_overdue(50))  # leased payments are not leased again


async def test_a_started_attempt_without_an_answer_is_in_flight_until_its_call_must_have_ended(store, merchant):
    """Reconciliation must not ask the connector about a confirm still calling it:
    "not found" would then fail a payment about to be charged."""
    pay = await store.create_payment(merchant)
    await store.begin_attempt(merchant, pay["id"])
    assert (await store.open_attempt(pay["id"], in_flight_s=60))["in_flight"] is True
    assert (await store.open_attempt(pay["id"], in_flight_s=0))["in_flight"] is False


async def test_review_is_flagged_once_however_many_checks_race(store, merchant):
    pay = await store.create_payment(merchant)
    await store.begin_attempt(merchant, pay["id"])
    await store.record_inconclusive_check(pay["id"], max_checks=2)
    results = await together(5, lambda _: store.record_inconclusive_check(pay["id"], max_checks=2))
    assert all(r["review_required"] for r in results), results
    got = await store.payment(merchant, pay["id"])
    assert got["review_required"]
    assert got["status"] == "processing"
    assert (await _types(store, merchant, pay["id"])).count("payment.review_required") == 1


# ---- capture and cancel: requires_capture → succeeded | canceled


async def _authorized(store, merchant, amount: int = 1000) -> dict:
    pay = await store.create_payment(merchant, amount, capture_method="manual")
    attempt = await store.begin_attempt(merchant, pay["id"])
    got = await store.settle(merchant, pay["id"], attempt, OutcomeKind.AUTHORIZED, f"pi_{pay['id']}a")
    assert got["status"] == "requires_capture"
    assert got["amount_capturable"] == amount
    return got


async def test_capture_of_an_authorisation_succeeds_and_releases_the_rest(store, merchant):
    pay = await _authorized(store, merchant)
    got = await store.capture(merchant, pay["id"], 600)
    assert (got["status"], got["amount_received"], got["amount_capturable"]) == ("succeeded", 600, 0)


async def test_capture_refuses_a_payment_that_is_not_authorised(store, merchant):
    pay = await store.create_payment(merchant)
    with pytest.raises(StateError):
        await store.capture(merchant, pay["id"], 500)
    assert (await store.payment(merchant, pay["id"]))["status"] == "requires_confirmation"


async def test_concurrent_captures_and_cancels_one_wins(store, merchant):
    pay = await _authorized(store, merchant)
    results = await together(10, lambda i: store.capture(merchant, pay["id"], 500 + i) if i % 2
                             else store.cancel(merchant, pay["id"]))
    wins = _wins(results)
    assert len(wins) == 1, results
    assert all(isinstance(r, StateError) for r in results if r is not wins[0])
    final = await store.payment(merchant, pay["id"])
    assert final["status"] == wins[0]["status"]
    terminal = [t for t in await _types(store, merchant, pay["id"]) if t in ("payment.succeeded", "payment.canceled")]
    assert terminal == [f"payment.{final['status']}"]


async def test_concurrent_operation_claims_give_the_payment_to_exactly_one(store, merchant):
    """Capture and void claim the payment before the connector call: one claimant only."""
    pay = await _authorized(store, merchant)
    results = await together(8, lambda i: store.claim_operation(merchant, pay["id"], "capture" if i % 2 else "cancel"))
    wins = _wins(results)
    assert len(wins) == 1, results
    assert all(isinstance(r, StateError) for r in results if r is not wins[0])


async def test_a_released_or_lapsed_claim_can_be_taken_again_and_capture_clears_it(store, merchant):
    pay = await _authorized(store, merchant)
    await store.claim_operation(merchant, pay["id"], "capture")
    await store.release_operation(merchant, pay["id"], "capture")
    await store.claim_operation(merchant, pay["id"], "cancel", hold_s=0.0)  # lapses at once
    await store.claim_operation(merchant, pay["id"], "capture")
    await store.capture(merchant, pay["id"], 1000)
    with pytest.raises(StateError):
        await store.claim_operation(merchant, pay["id"], "cancel")


async def test_a_claimant_stopped_past_its_claim_cannot_write_after_another_took_it(store, merchant):
    """A capture whose claim lapsed while its process was stopped (SIGSTOP) and was taken by a
    cancel elsewhere: the late capture is refused even before the cancel writes, and does not
    give back the other claim; the cancel then writes."""
    pay = await _authorized(store, merchant)
    stopped = await store.claim_operation(merchant, pay["id"], "capture", hold_s=0.05)
    await trio.sleep(0.2)
    taker = await store.claim_operation(merchant, pay["id"], "cancel")
    with pytest.raises(StateError):
        await store.capture_claimed(stopped, 1000)
    await store.release_claimed(stopped, "capture")  # not its claim any more: nothing happens
    with pytest.raises(StateError):  # the cancel's claim still holds the payment
        await store.claim_operation(merchant, pay["id"], "capture")
    assert (await store.payment(merchant, pay["id"]))["status"] == "requires_capture"
    assert (await store.cancel_claimed(taker))["status"] == "canceled"
    assert "payment.succeeded" not in await _types(store, merchant, pay["id"])


async def test_a_claimant_stopped_past_its_claim_cannot_write_after_the_same_operation_was_taken(store, merchant):
    pay = await _authorized(store, merchant)
    stopped = await store.claim_operation(merchant, pay["id"], "capture", hold_s=0.05)
    await trio.sleep(0.2)
    taker = await store.claim_operation(merchant, pay["id"], "capture")
    with pytest.raises(StateError):
        await store.capture_claimed(stopped, 400)
    assert (await store.capture_claimed(taker, 600))["amount_received"] == 600


async def test_an_operation_claim_needs_an_authorised_payment(store, merchant):
    pay = await store.create_payment(merchant)
    with pytest.raises(StateError):
        await store.claim_operation(merchant, pay["id"], "capture")


async def test_cancel_refuses_a_succeeded_payment(store, merchant):
    pay = await _authorized(store, merchant)
    await store.capture(merchant, pay["id"], 1000)
    with pytest.raises(StateError):
        await store.cancel(merchant, pay["id"])
    assert (await store.payment(merchant, pay["id"]))["status"] == "succeeded"


# ---- refunds: counted against the payment under its lock


async def _succeeded(store, merchant, amount: int = 1000) -> dict:
    pay = await store.create_payment(merchant, amount)
    attempt = await store.begin_attempt(merchant, pay["id"])
    return await store.settle(merchant, pay["id"], attempt, OutcomeKind.SUCCEEDED, f"pi_{pay['id']}s")


async def test_refund_of_a_succeeded_payment_is_counted_at_once(store, merchant):
    pay = await _succeeded(store, merchant)
    refund = await store.begin_refund(merchant, pay["id"], 300)
    assert refund["status"] == "pending"
    assert (await store.payment(merchant, pay["id"]))["amount_refunded"] == 300


async def test_refund_refuses_an_unfinished_payment_and_an_excess(store, merchant):
    pending = await store.create_payment(merchant)
    with pytest.raises(StateError):
        await store.begin_refund(merchant, pending["id"], 100)
    pay = await _succeeded(store, merchant)
    with pytest.raises(RefundExceedsPayment):
        await store.begin_refund(merchant, pay["id"], 1001)
    assert (await store.payment(merchant, pay["id"]))["amount_refunded"] == 0


async def test_concurrent_refunds_never_exceed_the_payment(store, merchant):
    pay = await _succeeded(store, merchant)
    results = await together(10, lambda _: store.begin_refund(merchant, pay["id"], 300))
    assert len(_wins(results)) == 3, results
    assert all(isinstance(r, RefundExceedsPayment) for r in results if r not in _wins(results))
    assert (await store.payment(merchant, pay["id"]))["amount_refunded"] == 900


async def test_a_failed_refund_gives_its_amount_back_once(store, merchant):
    pay = await _succeeded(store, merchant)
    refund = await store.begin_refund(merchant, pay["id"], 400)
    results = await together(6, lambda _: store.settle_refund(refund["id"], succeeded=False))
    assert sum(r is not None for r in results) == 1, results  # the others saw it already ended
    assert (await store.payment(merchant, pay["id"]))["amount_refunded"] == 0
    assert await _types(store, merchant, refund["id"]) == ["refund.failed"]


# ---- wallets: reservations under the account lock


async def test_withdrawal_reserves_and_refuses_more_than_available(store, merchant):
    account = await store.create_account(merchant)
    deposit = await store.deposit(merchant, account, 1000)
    assert deposit["status"] == "completed"
    await store.begin_withdrawal(merchant, account, 700)
    with pytest.raises(InsufficientFunds):
        await store.begin_withdrawal(merchant, account, 301)
    got = await store.account(merchant, account)
    assert (got["balance"], got["available_balance"]) == (1000, 300)


async def test_a_failed_deposit_credits_nothing(store, merchant):
    account = await store.create_account(merchant)
    deposit = await store.deposit(merchant, account, 1000, succeed=False)
    assert deposit["status"] == "failed"
    assert (await store.account(merchant, account))["balance"] == 0


async def test_concurrent_withdrawals_never_overdraw(store, merchant):
    account = await store.create_account(merchant)
    await store.deposit(merchant, account, 1000)
    results = await together(10, lambda _: store.begin_withdrawal(merchant, account, 300))
    assert len(_wins(results)) == 3, results
    assert all(isinstance(r, InsufficientFunds) for r in results if r not in _wins(results))
    assert (await store.account(merchant, account))["available_balance"] == 100


async def test_a_payout_answer_settles_a_withdrawal_once(store, merchant):
    account = await store.create_account(merchant)
    await store.deposit(merchant, account, 1000)
    txn = await store.begin_withdrawal(merchant, account, 400)
    await together(4, lambda _: store.record_payout(txn["id"], "succeeded"))
    got = await store.account(merchant, account)
    assert (got["balance"], got["available_balance"]) == (600, 600)
    assert await _types(store, merchant, txn["id"]) == ["account.withdrawal.completed"]


# ---- idempotency keys


async def test_idempotency_claim_then_replay_then_reuse(store, merchant):
    assert await store.claim_key(merchant, "k1", "body") is None
    with pytest.raises(IdempotencyKeyInUse):
        await store.claim_key(merchant, "k1", "body")
    await store.complete_key(merchant, "k1", 201, '{"id": 1}')
    stored = await store.claim_key(merchant, "k1", "body")
    assert (stored.status, stored.body) == (201, '{"id": 1}')
    with pytest.raises(IdempotencyKeyReused):
        await store.claim_key(merchant, "k1", "another body")


async def test_concurrent_claims_of_one_key_give_it_to_exactly_one(store, merchant):
    results = await together(10, lambda _: store.claim_key(merchant, "k-race", "body"))
    assert results.count(None) == 1, results
    assert all(isinstance(r, IdempotencyKeyInUse) for r in results if r is not None)


# ---- the incoming webhook inbox: stored once, leased to one worker, applied once


async def _processing(store, merchant) -> tuple[dict, str]:
    """A payment whose attempt is pending at the connector (its outcome comes by webhook)."""
    pay = await store.create_payment(merchant)
    attempt = await store.begin_attempt(merchant, pay["id"])
    txn = f"pi_{pay['id']}p"
    got = await store.settle(merchant, pay["id"], attempt, OutcomeKind.PENDING, txn)
    assert got["status"] == "processing"
    return got, txn


async def test_a_webhook_is_stored_once_however_often_it_arrives(store, merchant):
    pay, txn = await _processing(store, merchant)
    event = (f"evt_{pay['id']}", "payment.succeeded", txn, pay["id"])
    results = await together(6, lambda _: store.store_webhooks([event]))
    assert sum(len(r) for r in results) == 1, results


async def test_concurrent_workers_never_lease_the_same_webhook(store, merchant):
    pay, txn = await _processing(store, merchant)
    await store.store_webhooks([(f"evt_lease_{pay['id']}_{i}", "payment.succeeded", txn, pay["id"])
                                for i in range(20)])
    results = await together(5, lambda _: store.claim_webhooks(8))
    leased = [i for r in results for i in r]
    assert len(leased) == len(set(leased)), results
    assert len(leased) >= 20, results


async def test_a_webhook_applied_concurrently_moves_the_payment_once(store, merchant):
    pay, txn = await _processing(store, merchant)
    (row,) = await store.store_webhooks([(f"evt_apply_{pay['id']}", "payment.succeeded", txn, pay["id"])])
    statuses = await together(5, lambda _: store.apply_webhook(row))
    assert statuses == ["applied"] * 5, statuses  # the first applies; the others see it applied
    assert (await store.payment(merchant, pay["id"]))["status"] == "succeeded"
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.processing",
                                                       "payment.succeeded"]


async def test_a_late_failure_webhook_never_moves_a_succeeded_payment(store, merchant):
    pay, txn = await _processing(store, merchant)
    (ok,) = await store.store_webhooks([(f"evt_ok_{pay['id']}", "payment.succeeded", txn, pay["id"])])
    (late,) = await store.store_webhooks([(f"evt_late_{pay['id']}", "payment.failed", txn, pay["id"])])
    assert await store.apply_webhook(ok) == "applied"
    assert await store.apply_webhook(late) == "ignored"
    assert (await store.payment(merchant, pay["id"]))["status"] == "succeeded"


async def test_the_insert_that_claims_an_outcome_reads_what_its_apply_would(store, merchant):
    pay, txn = await _processing(store, merchant)
    ((row, seen),) = await store.store_and_claim_webhooks([(f"evt_seen_{pay['id']}", "payment.succeeded", txn,
                                                            pay["id"])])
    assert seen is not None
    assert seen == await store.seen_for_apply(row)
    assert seen.payment["status"] == "processing"
    assert seen.matched_attempt is not None
    assert await store.apply_webhook(row, seen) == "applied"
    assert (await store.payment(merchant, pay["id"]))["status"] == "succeeded"
    (other,) = await store.store_and_claim_webhooks([(f"evt_seen_other_{pay['id']}", "payment.updated", txn,
                                                      pay["id"])])
    assert other[1] is None  # only payment outcomes take the hot path


async def test_a_claim_reads_what_the_apply_of_an_outcome_would(store, merchant):
    """Rows stored by a process without a processor are claimed by one that has it, read included."""
    pay, txn = await _processing(store, merchant)
    (row,) = await store.store_webhooks([(f"evt_claimed_{pay['id']}", "payment.failed", txn, pay["id"])])
    claimed = dict(await store.claim_webhooks_seen(500))
    assert claimed[row] is not None
    assert claimed[row] == await store.seen_for_apply(row)
    assert await store.apply_webhook(row, claimed[row]) == "applied"
    assert (await store.payment(merchant, pay["id"]))["status"] == "failed"


async def test_outcomes_applied_with_what_their_inserts_read_move_the_payment_once(store, merchant):
    """Both rows were read while the payment was processing: the second settle's guard fails, and the
    locked apply ignores it."""
    pay, txn = await _processing(store, merchant)
    stored = await store.store_and_claim_webhooks([(f"evt_stale_ok_{pay['id']}", "payment.succeeded", txn, pay["id"]),
                                                   (f"evt_stale_no_{pay['id']}", "payment.failed", txn, pay["id"])])
    assert all(seen is not None and seen.payment["status"] == "processing" for _, seen in stored)
    statuses = await together(2, lambda i: store.apply_webhook(*stored[i]))
    assert sorted(statuses) == ["applied", "ignored"], statuses
    status = (await store.payment(merchant, pay["id"]))["status"]
    assert status == ("succeeded" if statuses[0] == "applied" else "failed")
    assert (await _types(store, merchant, pay["id"]))[-1] == f"payment.{status}"
    assert len(await _types(store, merchant, pay["id"])) == 3
    again = await together(3, lambda _: store.apply_webhook(*stored[0]))
    assert set(again) <= {"applied", "ignored"}
    assert (await store.payment(merchant, pay["id"]))["status"] == status


async def test_a_processor_stopped_past_its_lease_cannot_apply_a_row_another_took_over(store, merchant):
    """SIGSTOP of a process holding inbox rows: its lease lapses and another process claims them.
    When the stopped one continues, every guarded statement refuses its late work (apply on the hot
    path with what its claim read, the locked apply, a failure's backoff, the bulk ignore), even
    before the new holder applies; the new holder then applies once."""
    pay, txn = await _processing(store, merchant)
    (row,) = await store.store_webhooks([(f"evt_fence_{pay['id']}", "payment.succeeded", txn, pay["id"])])
    stopped_claim, stopped_seen = (await store.claim_webhooks_held(500, lease_s=0.05))[row]
    await trio.sleep(0.2)
    taker_claim, taker_seen = (await store.claim_webhooks_held(500))[row]
    assert taker_claim == stopped_claim + 1
    assert await store.apply_webhook(row, stopped_seen, stopped_claim) == "taken_over"
    assert await store.apply_webhook(row, None, stopped_claim) == "taken_over"
    assert await store.fail_webhook(row, stopped_claim) == "missing"
    assert await store.ignore_late_webhooks({row: stopped_claim}) == set()
    held = await store.inbox_row(row)
    assert held["processed_at"] is None
    assert held["failures"] == 0
    assert held["tries"] == taker_claim
    assert (await store.payment(merchant, pay["id"]))["status"] == "processing"
    assert await store.apply_webhook(row, taker_seen, taker_claim) == "applied"
    assert (await store.payment(merchant, pay["id"]))["status"] == "succeeded"
    assert await store.apply_webhook(row, stopped_seen, stopped_claim) == "applied"  # done: its status, no move
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.processing",
                                                       "payment.succeeded"]


async def test_a_late_outcome_is_ignored_in_bulk_only_by_its_holder(store, merchant):
    pay, txn = await _processing(store, merchant)
    (ok,) = await store.store_webhooks([(f"evt_bulk_ok_{pay['id']}", "payment.succeeded", txn, pay["id"])])
    assert await store.apply_webhook(ok) == "applied"
    (late,) = await store.store_webhooks([(f"evt_bulk_late_{pay['id']}", "payment.failed", txn, pay["id"])])
    stopped_claim, _ = (await store.claim_webhooks_held(500, lease_s=0.05))[late]
    await trio.sleep(0.2)
    taker_claim, _ = (await store.claim_webhooks_held(500))[late]
    assert await store.ignore_late_webhooks({late: stopped_claim}) == set()
    assert await store.ignore_late_webhooks({late: taker_claim}) == {late}


async def test_a_dispatcher_stopped_past_its_delivery_lease_cannot_record_after_another_took_it(store):
    """A delivery claimed, its holder stopped past the lease, claimed again elsewhere: the late
    holder's result is logged as an attempt but moves nothing; the new holder's result counts."""
    merchant = await store.create_merchant("delivery fence")
    await store.create_endpoint(merchant)
    await store.create_payment(merchant)  # payment.created: one delivery for the endpoint
    stopped = await store.claim_deliveries()
    assert stopped
    delivery, stopped_token = next(iter(stopped.items()))
    await store.lapse_delivery_leases()
    taker = await store.claim_deliveries()
    assert taker[delivery] != stopped_token
    assert await store.record_delivery_attempt(delivery, stopped_token, 500) == "pending"
    row = await store.delivery(delivery)
    assert row["attempt_count"] == 0
    assert row["claim_token"] == taker[delivery]
    assert row["last_status_code"] is None
    assert await store.record_delivery_attempt(delivery, taker[delivery], 200) == "succeeded"
    assert await store.record_delivery_attempt(delivery, stopped_token, 200) == "succeeded"
    assert (await store.delivery(delivery))["attempt_count"] == 1


# ---- the event log


async def test_concurrent_units_of_work_number_events_without_gaps(store, merchant):
    async def one(i: int) -> dict:
        pay = await store.create_payment(merchant, 100 + i)
        attempt = await store.begin_attempt(merchant, pay["id"])
        return await store.settle(merchant, pay["id"], attempt, OutcomeKind.SUCCEEDED, f"pi_seq{i}s")

    await together(12, one)
    seqs = [e["seq"] for e in await store.events(merchant)]
    assert seqs == list(range(1, 25)), seqs


# ---- v1.2: a payment waiting for its customer (requires_action)

NEXT_ACTION = {"type": "redirect_to_url", "redirect_to_url": {"url": "https://hooks.stripe.example/3ds/x",
                                                              "return_url": "https://shop.example/back"}}


async def _waiting(store, merchant, *, connector: str = "mockstripe", action_deadline_s: float = 3600.0,
                   txn: str | None = None) -> tuple[dict, str, str]:
    """A payment in requires_action (its connector asked for 3-D Secure); with its attempt id and txn."""
    pay = await store.create_payment(merchant)
    attempt = await store.begin_attempt(merchant, pay["id"], connector=connector,
                                        action_deadline_s=action_deadline_s)
    txn = txn or f"pi_{pay['id']}w"
    got = await store.answer(merchant, pay["id"], attempt,
                             Outcome(OutcomeKind.REQUIRES_ACTION, txn, next_action=NEXT_ACTION))
    assert got["status"] == "requires_action", got
    assert got["next_action"] == NEXT_ACTION, got
    assert got["attempts"][-1]["status"] == "started"
    return got, attempt, txn


async def test_requires_action_then_the_gateways_answer(store, merchant):
    pay, attempt, txn = await _waiting(store, merchant)
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.requires_action"]
    events = await store.events(merchant, pay["id"])
    assert events[-1]["data"]["object"]["next_action"] == NEXT_ACTION
    # No answer from the gateway while the customer acts: nothing moves.
    same = await store.answer(merchant, pay["id"], attempt, Outcome(OutcomeKind.UNKNOWN, None, "connector_timeout"))
    assert same["status"] == "requires_action"
    assert same["next_action"] == NEXT_ACTION
    assert same["attempts"][-1]["status"] == "started"
    assert same["attempts"][-1]["error_code"] is None
    done = await store.answer(merchant, pay["id"], attempt, Outcome(
        OutcomeKind.SUCCEEDED, txn, method_details={"brand": "visa", "last4": "3155", "fingerprint": "f"}))
    assert done["status"] == "succeeded"
    assert done["next_action"] is None
    assert done["amount_received"] == 1000
    assert done["payment_method"]["card"] == {"brand": "visa", "last4": "3155"}
    late = await store.answer(merchant, pay["id"], attempt, Outcome(OutcomeKind.CANCELED, txn))
    assert late["status"] == "succeeded"  # a terminal status never changes
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.requires_action",
                                                       "payment.succeeded"]


async def test_pending_after_the_action_resumes_processing(store, merchant):
    pay, attempt, txn = await _waiting(store, merchant)
    got = await store.answer(merchant, pay["id"], attempt, Outcome(OutcomeKind.PENDING, txn))
    assert got["status"] == "processing"
    assert got["next_action"] is None
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.requires_action",
                                                       "payment.processing"]
    got = await store.answer(merchant, pay["id"], attempt, Outcome(OutcomeKind.AUTHORIZED, txn))
    assert got["status"] == "requires_capture"


async def test_cancel_from_requires_action_closes_its_attempt(store, merchant):
    pay, _attempt, _txn = await _waiting(store, merchant)
    got = await store.cancel(merchant, pay["id"], "abandoned")
    assert got["status"] == "canceled"
    assert got["cancellation_reason"] == "abandoned"
    assert got["next_action"] is None
    assert (got["attempts"][-1]["status"], got["attempts"][-1]["error_code"]) == ("failed", "payment_canceled")
    assert await store.payment(merchant, pay["id"]) == got
    with pytest.raises(StateError):
        await store.cancel(merchant, pay["id"])


async def test_a_cancel_racing_the_gateways_answer_ends_the_payment_once(store, merchant):
    pay, attempt, txn = await _waiting(store, merchant)
    results = await together(6, lambda i: store.cancel(merchant, pay["id"]) if i % 2 else
                             store.answer(merchant, pay["id"], attempt, Outcome(OutcomeKind.SUCCEEDED, txn)))
    final = (await store.payment(merchant, pay["id"]))["status"]
    assert final in ("canceled", "succeeded")
    types = await _types(store, merchant, pay["id"])
    assert len([t for t in types if t in ("payment.canceled", "payment.succeeded")]) == 1, types
    assert types[-1] == f"payment.{final}"


async def test_abandoned_payments_are_leased_once(store, merchant):
    waiting = [await _waiting(store, merchant, action_deadline_s=0.0) for _ in range(4)]
    fresh, _, _ = await _waiting(store, merchant)  # its deadline is an hour away
    results = await together(4, lambda _: store.lease_abandoned(500))
    leased = [i for r in results for i in r]
    assert sorted(leased) == sorted(p["id"] for p, _, _ in waiting), results
    assert fresh["id"] not in leased
    assert await store.lease_abandoned(500) == []  # the lease pushed their deadlines on


# ---- v1.2: real connectors' events in the inbox (per connector account)

def _event(kind: str, txn: str, payment_id: str | None, account: str | None, **extra) -> GatewayEvent:
    return GatewayEvent("stripe", f"evt_{secrets.token_hex(8)}", kind, txn, payment_id, None, None, None, 0,
                        account_id=account, **extra)


async def _stripe_waiting(store, merchant) -> tuple[dict, str, str, str]:
    account = f"mca_{secrets.token_hex(6)}"
    await store.add_connector_account(merchant, "stripe", account)
    pay, attempt, txn = await _waiting(store, merchant, connector="stripe")
    return pay, attempt, txn, account


async def test_an_event_on_another_accounts_path_moves_nothing(store, merchant):
    pay, _attempt, txn, account = await _stripe_waiting(store, merchant)
    for forged in (_event("payment.succeeded", txn, pay["id"], "mca_someoneelse"),
                   _event("payment.succeeded", "pi_unknown", pay["id"], "mca_someoneelse")):
        row = await store.store_event(forged)
        assert await store.apply_webhook(row) == "ignored"
        assert (await store.inbox_item(row))["last_error"] == "the payment is not this connector account's"
    assert (await store.payment(merchant, pay["id"]))["status"] == "requires_action"
    row = await store.store_event(_event("payment.succeeded", txn, pay["id"], account,
                                         method_details={"brand": "visa", "last4": "3155"}))
    assert await store.apply_webhook(row) == "applied"
    got = await store.payment(merchant, pay["id"])
    assert got["status"] == "succeeded"
    assert got["payment_method"]["card"] == {"brand": "visa", "last4": "3155"}


async def test_a_failed_try_is_recorded_and_the_payment_keeps_waiting(store, merchant):
    pay, _attempt, txn, account = await _stripe_waiting(store, merchant)
    row = await store.store_event(_event("payment.attempt_failed", txn, None, account, error_code="BAD_REQUEST_ERROR",
                                         message="Payment failed"))
    assert await store.apply_webhook(row) == "applied"
    got = await store.payment(merchant, pay["id"])
    assert got["status"] == "requires_action"
    assert got["next_action"] == NEXT_ACTION
    assert got["last_error"] == {"code": "BAD_REQUEST_ERROR", "message": "Payment failed"}
    assert got["attempts"][-1]["error_code"] == "BAD_REQUEST_ERROR"
    again = await store.store_event(_event("payment.requires_action", txn, None, account))
    assert await store.apply_webhook(again) == "ignored"  # it already waits: no second event
    other = await store.store_event(_event("ignored", txn, None, account, event_type="charge.updated"))
    assert await store.apply_webhook(other) == "ignored"
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.requires_action"]
    canceled = await store.store_event(_event("payment.canceled", txn, None, account))
    assert await store.apply_webhook(canceled) == "applied"
    assert (await store.payment(merchant, pay["id"]))["status"] == "canceled"


async def test_money_taken_at_the_gateway_after_a_cancel_here_flags_the_payment(store, merchant):
    pay, _attempt, txn, account = await _stripe_waiting(store, merchant)
    canceled = await store.cancel(merchant, pay["id"], "abandoned")
    assert canceled["status"] == "canceled"
    for _ in range(2):  # the gateway repeats itself: flagged once
        row = await store.store_event(_event("payment.succeeded", txn, pay["id"], account))
        assert await store.apply_webhook(row) == "applied"
    got = await store.payment(merchant, pay["id"])
    assert got["status"] == "canceled"
    assert got["review_required"] is True
    assert got["last_error"]["code"] == "charged_after_cancel"
    assert await _types(store, merchant, pay["id"]) == ["payment.created", "payment.requires_action",
                                                       "payment.canceled", "payment.review_required"]
