"""Migration 0015 converts the existing tables in place: a database migrated to
just before it, holding rows in every table it converts, keeps every row (and
the inbox's dedup) after it, and the maintenance places the rows in their
period partitions."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import asyncpg
import trio

from pg import migrate
from storage import partitions
from storage.database import Database

BOUNDED = 15


async def _migrate_before(conn) -> None:
    """Apply the migrations older than 0015, as ``migrate.apply`` would."""
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                       " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    for version, name, path in migrate.available():
        if version < BOUNDED:
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)


async def _old_rows(conn) -> None:
    """Rows of every converted table, some 70 days old, some now."""
    await conn.execute("INSERT INTO merchants (id, name, api_key_hash, event_seq) VALUES ('mer_1', 'm', 'h', 2)")
    await conn.execute(
        "INSERT INTO events (id, merchant_id, seq, type, object_id, data, created_at) VALUES"
        " ('evt_1', 'mer_1', 1, 'payment.created', 'pay_1', '{}', now() - interval '70 days'),"
        " ('evt_2', 'mer_1', 2, 'payment.created', 'pay_2', '{}', now())")
    await conn.execute(
        "INSERT INTO webhook_inbox (id, connector, event_id, kind, connector_txn_id, raw_body, received_at) VALUES"
        " ('ibx_1', 'mockstripe', 'e1', 'payment.succeeded', 't1', '{}', now() - interval '70 days'),"
        " ('ibx_2', 'mockstripe', 'e2', 'payment.succeeded', 't2', '{}', now())")
    await conn.execute(
        "INSERT INTO realtime_messages (merchant_id, client_id, seq, topic, payload, created_at) VALUES"
        " ('mer_1', 'c', 1, 'payment:pay_1', '{}', now() - interval '70 days'), ('mer_1', 'c', 2, 't', '{}', now())")
    await conn.execute(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, enabled_events, status)"
        " VALUES ('we_1', 'mer_1', 'http://x', 's', '{*}', 'enabled')")
    await conn.execute(
        "INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, event_type, status, max_attempts)"
        " VALUES ('wd_1', 'mer_1', 'we_1', 'evt_1', 'payment.created', 'succeeded', 3)")
    await conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, created_at) VALUES"
        " ('wd_1', 1, 500, 3, now() - interval '70 days'), ('wd_1', 2, 200, 3, now())")


async def test_0015_keeps_every_row_and_the_maintenance_places_them(new_database):
    db = Database(new_database("paycast_partition_migration"))
    await db.open()
    try:
        await db.run(_migrate_before)
        await db.run(_old_rows)
        assert (await db.run(migrate.apply))[0] == "0015_bounded_tables"

        async def counts(conn) -> dict:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                    for t in ("events", "webhook_inbox", "realtime_messages", "webhook_attempts",
                              "webhook_inbox_keys")}

        assert await db.run(counts) == {"events": 2, "webhook_inbox": 2, "realtime_messages": 2,
                                        "webhook_attempts": 2, "webhook_inbox_keys": 2}
        # The attempts' ids go on from where the old identity column was.
        next_id = await db.run(lambda conn: conn.fetchval(
            "INSERT INTO webhook_attempts (delivery_id, attempt, latency_ms) VALUES ('wd_1', 3, 1) RETURNING id"))
        assert next_id == 3
        # The inbox's dedup holds for the converted rows.
        stored = await db.run(lambda conn: conn.fetch(
            "WITH k AS (INSERT INTO webhook_inbox_keys (connector, event_id, inbox_id) VALUES ('mockstripe', 'e1',"
            " 'ibx_9') ON CONFLICT DO NOTHING RETURNING 1) SELECT * FROM k"))
        assert stored == []

        report = await db.run(partitions.maintain, dt.datetime.now(dt.timezone.utc),
                              {t.name: None for t in partitions.TABLES}, 1)
        assert {t: r["moved"] for t, r in report.items()} == {
            "events": 2, "webhook_inbox": 2, "realtime_messages": 2, "webhook_attempts": 3}
        defaults = await db.run(lambda conn: conn.fetchval(
            "SELECT (SELECT count(*) FROM events_default) + (SELECT count(*) FROM webhook_inbox_default)"
            " + (SELECT count(*) FROM realtime_messages_default) + (SELECT count(*) FROM webhook_attempts_default)"))
        assert defaults == 0
        assert await db.run(counts) == {"events": 2, "webhook_inbox": 2, "realtime_messages": 2,
                                        "webhook_attempts": 3, "webhook_inbox_keys": 2}
    finally:
        await db.close()


async def test_0015_keeps_the_old_tables_non_unique_indexes(new_database):
    db = Database(new_database("paycast_partition_indexes"))
    await db.open()
    try:
        async def indexes(conn) -> set[str]:
            rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = ANY($1::text[])",
                                    ["events", "webhook_inbox", "webhook_attempts", "realtime_messages"])
            return {r["indexname"] for r in rows}

        await db.run(_migrate_before)
        before = await db.run(indexes)
        await db.run(migrate.apply)
        after = await db.run(indexes)
    finally:
        await db.close()
    kept = {"events_by_object", "events_by_type", "webhook_inbox_pending", "webhook_attempts_by_delivery"}
    assert kept <= before, (before, after)
    assert kept <= after, (before, after)
    assert "realtime_messages_age" in before
    assert "realtime_messages_age" not in after


async def test_a_table_in_use_past_the_lock_timeout_is_left_busy_and_made_next_round(new_database):
    """A transaction holding a bounded table (here a lock on ``events_default``
    that the rows' move must wait for) costs the maintenance that table's
    partitions for the round, reported ``busy``; the other tables are done,
    and the next round, the lock gone, makes what was left."""
    dsn = new_database("paycast_partition_busy")
    db = Database(dsn)
    await db.open()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)
    keep_all = {t.name: None for t in partitions.TABLES}
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        async def main() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE events_default IN SHARE MODE")
                    held.set()
                    await asyncio.get_running_loop().run_in_executor(None, release.wait)
            finally:
                await conn.close()

        asyncio.run(main())

    try:
        await db.run(migrate.apply)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold)
            await trio.to_thread.run_sync(held.wait)
            try:
                report = await db.run(partitions.maintain, later, keep_all, 1)
            finally:
                release.set()
        assert report["events"]["created"] == [] and len(report["events"]["busy"]) == 2, report
        for table in ("webhook_inbox", "realtime_messages", "webhook_attempts"):
            assert report[table]["created"] and report[table]["busy"] == [], report
        again = await db.run(partitions.maintain, later, keep_all, 1)
        assert again["events"]["created"] == report["events"]["busy"], again
        assert all(done["busy"] == [] for done in again.values()), again
    finally:
        await db.close()
