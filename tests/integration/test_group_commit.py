"""Group commit (docs/architecture.md decision 5) against the real PostgreSQL: one bad unit
in a batch fails alone, never its batch-mates, and nobody's result is returned
before the commit that holds it."""

from __future__ import annotations

import trio

from domain.errors import NotFound
from pg import migrate
from storage import merchants, webhook_deliveries
from storage import payments
from storage.database import Database
from telemetry import metrics
from tests.support import db_fetch


def _created_count() -> float:
    """Payments counted as created (``paycast_transitions_total``, new → requires_confirmation)."""
    return metrics.TRANSITIONS.labels("payment", "new", "requires_confirmation")._value.get()

SPEC = {"amount": 1000, "currency": "INR", "capture_method": "automatic",
        "payment_method": {"type": "card", "card": {"brand": "visa", "last4": "4242", "first6": "424242"}}}


async def _duplicate_merchant(conn, merchant_id: str) -> None:
    """A unit that violates a constraint (the merchant's primary key): a database error."""
    await conn.execute("INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, 'dup', 'x')", merchant_id)


async def test_one_bad_unit_fails_alone_and_the_others_commit(new_database):
    dsn = new_database("paycast_group_commit")
    db = Database(dsn, session_settings=webhook_deliveries.session_settings([0, 5]))
    await db.open()
    try:
        await db.run(migrate.apply)
        merchant, _ = await db.transaction(merchants.create, "batch")
        mid = merchant["id"]
        created_before = _created_count()
        results = await db.batch([
            (payments.create, (mid, SPEC)),
            (_duplicate_merchant, (mid,)),
            (payments.create, (mid, {**SPEC, "order_id": "ord_missing"})),
            (payments.create, (mid, {**SPEC, "amount": 2000})),
        ])
    finally:
        await db.close()
    first, bad, missing, last = results
    assert first["status"] == "requires_confirmation"
    assert last["amount"] == 2000
    assert isinstance(bad, Exception)
    assert "duplicate key" in str(bad)
    assert isinstance(missing, NotFound)
    rows = await trio.to_thread.run_sync(db_fetch, dsn, "SELECT id, amount FROM payments ORDER BY amount")
    assert [(r["id"], r["amount"]) for r in rows] == [(first["id"], 1000), (last["id"], 2000)]
    # Counted once each: the rolled-back batch's reports were dropped, the reruns counted theirs.
    assert _created_count() - created_before == 2
    events = await trio.to_thread.run_sync(db_fetch, dsn, "SELECT seq, object_id FROM events ORDER BY seq")
    assert [e["seq"] for e in events] == [1, 2]
    assert {e["object_id"] for e in events} == {first["id"], last["id"]}


async def test_a_batch_of_good_units_is_one_transaction(new_database):
    dsn = new_database("paycast_group_commit")
    db = Database(dsn, session_settings=webhook_deliveries.session_settings([0, 5]))
    await db.open()
    try:
        await db.run(migrate.apply)
        merchant, _ = await db.transaction(merchants.create, "batch")
        before = db.stats.get("database.batch")
        results = await db.batch([(payments.create, (merchant["id"], {**SPEC, "amount": a})) for a in (1, 2, 3)])
        batch = db.stats["database.batch"]
        create = db.stats["payments.create"]
    finally:
        await db.close()
    assert before is None
    assert [r["amount"] for r in results] == [1, 2, 3]
    # BEGIN + COMMIT once for the batch, one statement per create.
    assert batch.units == 1
    assert batch.round_trips == 2
    assert create.units == 3
    assert create.round_trips == 3
