"""``run.py check`` can fail: each invariant violation the schema allows is
seeded directly in PostgreSQL, and the checker must exit 1 naming it.

A dozen crash and race tests take a passing check as their verdict; these
tests are what make that verdict worth something. One consistent database is
built once through the real API (payments, a refund, a wallet deposit and
withdrawal, realtime messages); each test clones it (``CREATE DATABASE …
TEMPLATE``), proves the clone passes, breaks one thing with SQL, and checks.
"""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from tests.conftest import _with_database
from tests.support import CARD_OK, ServerProcess, db_fetch, expect, payment_body, run_check, wait_for


@pytest.fixture(scope="module")
def consistent_db(pg_admin_dsn, new_database):
    """Name of a database holding consistent data of every kind the checks look at."""
    dsn = new_database("paycast_golden")
    server = ServerProcess(dsn).start()
    try:
        api_key = server.create_merchant("golden")
        with server.client(api_key) as c:
            paid = c.post("/v1/payments", json=payment_body(1000, confirm=True, customer_id="cus_gold")).json()
            assert paid["status"] == "succeeded", paid
            refund = c.post("/v1/refunds", json={"payment_id": paid["id"], "amount": 300}).json()
            wait_for(lambda: c.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded")
            c.post("/v1/payments", json=payment_body(500, confirm=True))
            assert c.post("/v1/payments", json=payment_body(700)).json()["status"] == "requires_confirmation"
            account = c.post("/v1/accounts", json={"customer_id": "cus_gold", "currency": "INR"}).json()
            deposit = c.post(f"/v1/accounts/{account['id']}/deposits",
                             json={"amount": 5000, "payment_method": CARD_OK}).json()
            wait_for(lambda: c.get(f"/v1/transactions/{deposit['id']}").json()["status"] == "completed")
            withdrawal = c.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 1000}).json()
            wait_for(lambda: c.get(f"/v1/transactions/{withdrawal['id']}").json()["status"] == "completed")
            for i in range(3):
                r = c.post("/v1/realtime/publish", json={"client_id": "cus_rt", "event": {"type": "t", "data": i}})
                expect(r, 202)
        # The console's rollups include the whole log (actor:rollups), so their check has something to check.
        wait_for(lambda: db_fetch(dsn, "SELECT bool_and(m.event_seq = c.seq) AS done FROM merchants m"
                                       " JOIN stats_cursors c ON c.merchant_id = m.id")[0]["done"])
    finally:
        assert server.stop() == 0
    check = run_check(dsn)
    assert check.returncode == 0, check.stdout
    return dsn.partition("?")[0].rsplit("/", 1)[1]


def _sql(dsn: str, *statements: str, transaction: bool = True) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            if not transaction:
                for statement in statements:
                    await conn.execute(statement)
                return
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.fixture
def clone(pg_admin_dsn, consistent_db):
    """A fresh copy of the consistent database; returns its DSN."""
    name = f"paycast_broken_{secrets.token_hex(4)}"
    _sql(pg_admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{consistent_db}"', transaction=False)
    yield _with_database(pg_admin_dsn, name)
    _sql(pg_admin_dsn, f'DROP DATABASE "{name}" WITH (FORCE)', transaction=False)


# (the check's name as run.py prints it, SQL that breaks exactly that invariant)
VIOLATIONS = {
    "refund sum vs amount_refunded": (
        "amount_refunded differs from the sum of non-failed refunds",
        ["UPDATE payments SET amount_refunded = amount_refunded - 100 WHERE amount_refunded > 0"]),
    "refunds beyond the amount received": (
        "refunds exceed the amount received",
        ["INSERT INTO refunds (id, merchant_id, payment_id, amount, currency, connector, status)"
         " SELECT 're_seeded', merchant_id, payment_id, 5000, currency, connector, 'pending'"
         " FROM refunds LIMIT 1"]),
    "unbalanced ledger pair": (
        "ledger movement not a balanced pair",
        # ledger_entries is append-only (a trigger), so the half pair is appended.
        ["INSERT INTO ledger_entries (merchant_id, transaction_id, movement, account_id, book, currency, amount)"
         " SELECT merchant_id, id, 'release', account_id, 'available', currency, amount"
         " FROM account_transactions WHERE type = 'withdrawal' LIMIT 1"]),
    "event seq gap": (
        "gap in per-merchant event seq",
        ["DELETE FROM webhook_deliveries",
         "DELETE FROM events WHERE id = (SELECT id FROM events ORDER BY seq LIMIT 1 OFFSET 1)"]),
    "realtime seq gap": (
        "gap in per-client realtime seq",
        ["DELETE FROM realtime_messages WHERE client_id = 'cus_rt' AND seq = 2"]),
    "deposit disagreeing with its payment": (
        "deposit status disagrees with its payment",
        ["UPDATE payments SET status = 'failed', amount_received = 0"
         " WHERE id = (SELECT payment_id FROM account_transactions WHERE type = 'deposit' LIMIT 1)"]),
    "terminal status changed after its event": (
        "payment status disagrees with its last event",
        ["UPDATE payments SET status = 'canceled', amount_received = 0, amount_refunded = 0"
         " WHERE amount = 500"]),
    "a second terminal event": (
        "a terminal status changed",
        ["UPDATE merchants SET event_seq = event_seq + 1",
         "INSERT INTO events (id, merchant_id, seq, type, object_id, data)"
         " SELECT 'evt_seeded', e.merchant_id, m.event_seq, 'payment.failed', e.object_id, e.data"
         " FROM events e JOIN merchants m ON m.id = e.merchant_id"
         " WHERE e.type = 'payment.succeeded' ORDER BY e.seq LIMIT 1"]),
    "succeeded payment without a successful attempt": (
        "payment status disagrees with its successful attempt",
        ["UPDATE payment_attempts SET status = 'started'"
         " WHERE payment_id = (SELECT id FROM payments WHERE amount = 500)"]),
    "payment committed without its events": (
        "payment without its events",
        ["INSERT INTO payments (id, merchant_id, amount, currency, status, capture_method, payment_method,"
         " amount_received)"
         " SELECT 'pay_seeded', merchant_id, amount, currency, 'succeeded', capture_method, payment_method, amount"
         " FROM payments WHERE amount = 500",
         "INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status, connector_txn_id)"
         " SELECT 'att_seeded', 'pay_seeded', merchant_id, connector, 'succeeded', 'pi_seeded' FROM payment_attempts"
         " LIMIT 1"]),
    "waiting for the customer on no open attempt": (
        "requires_action without exactly one open attempt",
        ["UPDATE payments SET status = 'requires_action', amount_received = 0, amount_refunded = 0"
         " WHERE amount = 500"]),
    "a cancellation reason on a payment that was not canceled": (
        "cancellation_reason on a payment that is not canceled",
        ["UPDATE payments SET cancellation_reason = 'abandoned' WHERE amount = 500"]),
    "webhook outcome applied twice": (
        "outcome event written more than once",
        ["UPDATE merchants SET event_seq = event_seq + 1",
         "INSERT INTO events (id, merchant_id, seq, type, object_id, data)"
         " SELECT 'evt_twice', e.merchant_id, m.event_seq, e.type, e.object_id, e.data"
         " FROM events e JOIN merchants m ON m.id = e.merchant_id"
         " WHERE e.type = 'refund.succeeded' LIMIT 1"]),
    "an endpoint secret left in plaintext": (
        "secret stored unencrypted",
        ["INSERT INTO webhook_endpoints (id, merchant_id, url, secret, enabled_events, status)"
         " SELECT 'we_seeded', id, 'https://example.com/hook', 'whsec_plaintext', ARRAY['*'], 'enabled'"
         " FROM merchants LIMIT 1"]),
    "an attempt on a connector account of another connector": (
        "attempt on another merchant's or connector's account",
        ["INSERT INTO connector_accounts (id, merchant_id, connector, status, livemode, credentials_sealed,"
         " webhook_secret_sealed, credentials_mask)"
         " SELECT 'mca_seeded', merchant_id, 'stripe', 'active', false, 'pcs1.0.x', 'pcs1.0.x', '{}'"
         " FROM payments WHERE amount = 500",
         "UPDATE payment_attempts SET connector_account_id = 'mca_seeded'"
         " WHERE payment_id = (SELECT id FROM payments WHERE amount = 500)"]),
    "a rollup off by one": (
        "console rollups disagree with the event log they count",
        ["UPDATE stats_rollups SET n = n + 1 WHERE period_s = 60 AND dimension = 'attempt'"]),
}


def test_a_payment_moved_to_processing_without_event_is_a_warning_naming_it(clone):
    """A confirm's move to processing writes no event: reported (``warn``) without failing the
    check, and the rollups, which count the log, still agree with it."""
    _sql(clone, "UPDATE payments SET status = 'processing' WHERE id = (SELECT id FROM payments"
                " WHERE status = 'requires_confirmation' LIMIT 1)")
    after = run_check(clone)
    assert after.returncode == 0, after.stdout
    assert "warn  payments in processing that no event shows yet" in after.stdout, after.stdout


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_check_exits_1_naming_the_seeded_violation(clone, violation):
    name, statements = VIOLATIONS[violation]  # the clone's source passed the check (consistent_db)
    _sql(clone, *statements)
    after = run_check(clone)
    assert after.returncode == 1, after.stdout
    failed = [line.split("FAIL", 1)[1].split(" (")[0].strip() for line in after.stdout.splitlines()
              if line.startswith("FAIL")]
    assert name in failed, after.stdout


def test_every_check_is_valid_sql_and_passes_on_consistent_data(clone):
    """All checks run (no SQL error hides as 'ok') and none fires on data made through the API."""
    result = run_check(clone)
    from storage import invariants

    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(line.startswith("ok") for line in result.stdout.splitlines()) \
        == len(invariants.CHECKS) + len(invariants.WARNINGS), result.stdout
