"""Bounded tables (migration 0015): reads and resumes across a partition
boundary, then retention drops the old partitions and nothing the contract
needs is lost (seq continues, dedup holds, ``run.py check`` stays clean).

Rows are made old by moving their time column back (PostgreSQL moves a row to
the partition of its new time), then the maintenance runs with the real
clock, exactly as ``actor:partitions`` does.
"""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from domain import partitions as rules
from storage import partitions
from storage.database import Database
from tests.realtime_support import connect, frame, http, token, welcome
from tests.receiver import Receiver
from tests.support import (ADMIN_TOKEN, CARD_OK, UPI, ROLLUPS_CHECK, ServerProcess, db_fetch, expect, run_check,
                           sign_stripe)

AGE = "70 days"       # how far back the first half of the rows is moved
RETENTION = dt.timedelta(days=30)
KEEP_ALL = {t.name: None for t in partitions.TABLES}
DROP_OLD = {t.name: RETENTION for t in partitions.TABLES}


@pytest.fixture
def server_and_dsn(new_database):
    dsn = new_database("paycast_partitions")
    # Maintenance at start only: the test runs the later rounds itself.
    proc = ServerProcess(dsn, PAYCAST_PARTITION_MAINTENANCE_S="100000", PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
    try:
        yield proc, dsn
    finally:
        proc.stop()


async def _fetch(dsn: str, sql: str, *args) -> list[dict]:
    return await trio.to_thread.run_sync(lambda: db_fetch(dsn, sql, *args))


async def _maintain(dsn: str, retention: dict) -> dict:
    db = Database(dsn)
    await db.open()
    try:
        report = await db.run(partitions.maintain, dt.datetime.now(dt.timezone.utc), retention, 2)
    finally:
        await db.close()
    assert report is not None
    return report


async def _where(dsn: str, table: str, key_sql: str) -> dict[str, str]:
    """Row key → the partition holding it."""
    rows = await _fetch(dsn, f"SELECT {key_sql} AS k, tableoid::regclass::text AS part FROM {table}")
    return {r["k"]: r["part"] for r in rows}


async def _all_events_after(api, after_seq: int) -> list[int]:
    """Every event seq after ``after_seq``, paging two at a time (oldest first)."""
    seqs: list[int] = []
    params = {"after_seq": str(after_seq), "limit": "2"}
    while True:
        page = (await api.get("/v1/events", params=params)).json()
        seqs += [e["seq"] for e in page["data"]]
        if not page["has_more"]:
            return seqs
        params["starting_after"] = page["data"][-1]["id"]


async def _replay(rt, tok: str, after_seq: int, until_seq: int) -> list[dict]:
    """The frames a client resuming after ``after_seq`` gets, up to ``until_seq``."""
    out = []
    async with connect(rt, tok, after_seq=after_seq) as ws:
        await welcome(ws)
        while not out or out[-1].get("seq", 0) < until_seq:
            out.append(await frame(ws))
    return out


async def test_reads_cross_the_partition_boundary_and_retention_keeps_the_contract(server_and_dsn):
    server, dsn = server_and_dsn
    async with http(server, ADMIN_TOKEN) as admin:
        key = (await admin.post("/admin/merchants", json={"name": "p"})).json()["api_key"]
    with Receiver() as receiver:
        async with http(server, key) as api:
            expect(await api.post("/v1/webhook_endpoints",
                                   json={"url": receiver.url, "enabled_events": ["*"]}), 201)
            tok = await token(api, "cus_p")
            pays = []
            for method in (CARD_OK, UPI("success@upi"), CARD_OK, UPI("success@upi")):
                r = await api.post("/v1/payments", json={"amount": 1000, "currency": "INR", "customer_id": "cus_p",
                                                         "connector": "mockstripe", "payment_method": method,
                                                         "confirm": True})
                assert r.status_code in (200, 201), r.text
                pays.append(r.json()["id"])
                with trio.fail_after(15):  # one payment's events after the other's (UPI: by webhook)
                    while (await api.get(f"/v1/payments/{pays[-1]}")).json()["status"] != "succeeded":
                        await trio.sleep(0.05)
            with trio.fail_after(15):  # every delivery attempted
                while await _fetch(dsn, "SELECT 1 FROM webhook_deliveries WHERE status <> 'succeeded'") or \
                        len(receiver.received) < 8:
                    await trio.sleep(0.05)
            last_seq = max(await _all_events_after(api, 0))
            last_msg = (await _fetch(dsn, "SELECT last_seq FROM realtime_clients WHERE client_id = 'cus_p'"))[0][
                "last_seq"]

            # The first two payments' rows become old: into the default partition first...
            old_pays = pays[:2]
            await _fetch(dsn, f"UPDATE events SET created_at = created_at - interval '{AGE}'"
                              " WHERE object_id = ANY($1::text[])", old_pays)
            await _fetch(dsn, f"UPDATE payments SET created_at = created_at - interval '{AGE}',"
                              f" updated_at = updated_at - interval '{AGE}' WHERE id = ANY($1::text[])", old_pays)
            old_seqs = sorted(r["seq"] for r in await _fetch(dsn, "SELECT seq FROM events WHERE object_id = ANY($1)",
                                                                 old_pays))
            cut_seq = max(old_seqs)
            assert old_seqs == list(range(1, cut_seq + 1)), old_seqs  # the oldest events
            old_msgs = sorted(r["seq"] for r in await _fetch(
                dsn, f"UPDATE realtime_messages SET created_at = created_at - interval '{AGE}'"
                     " WHERE client_id = 'cus_p' AND payload->'data'->'object'->>'id' = ANY($1::text[]) RETURNING seq",
                old_pays))
            cut_msg = max(old_msgs)
            assert old_msgs == list(range(1, cut_msg + 1)), old_msgs
            await _fetch(dsn, f"UPDATE webhook_inbox_keys SET received_at = received_at - interval '{AGE}'"
                              " WHERE inbox_id IN (SELECT id FROM webhook_inbox WHERE payment_id = $1)", old_pays[1])
            moved = await _fetch(dsn, f"UPDATE webhook_inbox SET received_at = received_at - interval '{AGE}'"
                                      " WHERE payment_id = $1 RETURNING id", old_pays[1])
            assert len(moved) == 1, moved
            for table, column in (("webhook_attempts", "created_at"), ("webhook_deliveries", "delivered_at")):
                # (a delivery's delivered_at is its successful attempt's time)
                key = "delivery_id" if table == "webhook_attempts" else "id"
                await _fetch(dsn, f"UPDATE {table} SET {column} = {column} - interval '{AGE}'"
                                  f" WHERE {key} IN (SELECT d.id FROM webhook_deliveries d JOIN events e"
                                  " ON e.id = d.event_id WHERE e.seq <= $1)", cut_seq)
            assert set((await _where(dsn, "events", "seq")).values()) >= {"events_default"}

            # ... then the maintenance makes their period's partition and moves them there.
            report = await _maintain(dsn, KEEP_ALL)
            assert report["events"]["moved"] == cut_seq
            assert report["realtime_messages"]["moved"] == cut_msg
            where = await _where(dsn, "events", "seq")
            old_part = rules.name("events", rules.floor(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=70),
                                                        rules.Period.MONTH))
            assert {where[s] for s in old_seqs} == {old_part}
            assert len({where[s] for s in range(cut_seq + 1, last_seq + 1)}) == 1
            assert old_part not in {where[s] for s in range(cut_seq + 1, last_seq + 1)}
            for table in ("events", "realtime_messages", "webhook_inbox", "webhook_attempts"):
                assert await _fetch(dsn, f"SELECT 1 FROM {table}_default") == [], table

            # Reads across the boundary: the event log pages and resumes in seq order,
            # newest first too; a realtime client replays from before it and from its edge.
            assert await _all_events_after(api, 0) == list(range(1, last_seq + 1))
            assert await _all_events_after(api, cut_seq - 1) == list(range(cut_seq, last_seq + 1))
            newest = [e["seq"] for e in (await api.get("/v1/events", params={"limit": "100"})).json()["data"]]
            assert newest == list(range(last_seq, 0, -1))
            frames = await _replay(server, tok, 0, last_msg)
            assert [f["seq"] for f in frames] == list(range(1, last_msg + 1))
            frames = await _replay(server, tok, cut_msg - 1, last_msg)
            assert [f["seq"] for f in frames] == list(range(cut_msg, last_msg + 1))

            # Retention: the old partitions go whole.
            report = await _maintain(dsn, DROP_OLD)
            assert report["events"]["dropped"] == [old_part], report
            assert report["realtime_messages"]["dropped"], report
            assert report["webhook_inbox"]["dropped"], report
            assert report["webhook_attempts"]["dropped"], report
            assert await _fetch(dsn, "SELECT 1 FROM pg_class WHERE relname = $1", old_part) == []
            assert await _all_events_after(api, 0) == list(range(cut_seq + 1, last_seq + 1))
            frames = await _replay(server, tok, 0, last_msg)
            assert frames[0]["type"] == "error", frames[0]
            assert frames[0]["code"] == "replay_truncated", frames[0]
            assert [f["seq"] for f in frames[1:]] == list(range(cut_msg + 1, last_msg + 1))

            # Seq keeps counting from where it was: no value is handed out twice.
            r = await api.post("/v1/payments", json={"amount": 1000, "currency": "INR", "customer_id": "cus_p",
                                                     "payment_method": CARD_OK, "confirm": True})
            assert r.status_code in (200, 201), r.text
            assert (await _all_events_after(api, last_seq))[0] == last_seq + 1

            # The connector's event ids still dedupe inside the window: a kept webhook sent again is not stored again.
            kept = await _fetch(dsn, "SELECT event_id, raw_body FROM webhook_inbox WHERE connector = 'mockstripe'")
            assert len(kept) == 1, kept  # the old one went with its partition
            body = kept[0]["raw_body"].encode()
            r = await api.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body))
            expect(r, 200)
            assert len(await _fetch(dsn, "SELECT 1 FROM webhook_inbox WHERE event_id = $1",
                                    kept[0]["event_id"])) == 1
            # ... and the old one's key went with the window.
            assert len(await _fetch(dsn, "SELECT 1 FROM webhook_inbox_keys")) == 1

    server.stop()
    # Rows were back-dated by hand above, behind the event log the rollups fold.
    check = await trio.to_thread.run_sync(run_check, dsn, (ROLLUPS_CHECK,))
    assert check.returncode == 0, check.stdout + check.stderr
