"""The console's rollups against real servers and the real PostgreSQL.

- After seeded mixes of traffic (successes, declines, manual captures and
  cancels, refunds, disputes, UPI payments settled by webhook or left to the
  reconciler, retries through a flaky connector), every rollup row equals a
  direct count over the payments and attempts tables, read in the same
  snapshot once the rollups include the whole log, and ``run.py check`` holds.
- Rollups left stale (no worker ran while payments moved) or lost (rows or
  cursor deleted) are rebuilt from the event log when a worker starts.
- Every new read is the caller's own: another merchant sees none of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import httpx
import pytest

from domain import latency, rollups
from tests.support import ADMIN_TOKEN, CARD_DECLINED, UPI, db_fetch, expect, payment_body, run_check, wait_for

CARD_DISPUTED = {"type": "card", "card": {"number": "4000000000000259"}}
# Settings that make every kind of transition happen within a test: a flaky connector that often
# fails (so routed payments retry on another), deadlines that pass quickly and a reconciler that
# looks often (so pending payments move again).
ENV = {"PAYCAST_FLAKY_ERROR_RATE": "0.5", "PAYCAST_PROCESSING_DEADLINE_S": "1", "PAYCAST_RECONCILE_INTERVAL_S": "0.2"}


# --------------------------------------------------------------------------- traffic


def mixed_traffic(c: httpx.Client, rng: random.Random, n: int) -> None:
    """``n`` random operations of every kind the product has, through the API."""
    succeeded: list[str] = []
    held: list[str] = []
    unconfirmed: list[str] = []

    def pay(**body) -> dict:
        r = c.post("/v1/payments", json=payment_body(rng.randint(100, 5000), **body))
        assert r.status_code in (201, 402), r.text
        return r.json() if r.status_code == 201 else {}

    for _ in range(n):
        kind = rng.choice(["ok", "ok", "declined", "manual", "capture", "cancel", "unconfirmed", "confirm",
                           "refund", "dispute", "upi", "pending", "routed"])
        connector = rng.choice(["mockstripe", "mockrazorpay"])
        if kind == "ok":
            p = pay(confirm=True, connector=connector, customer_id=f"cus_{rng.randint(1, 5)}")
            if p.get("status") == "succeeded":
                succeeded.append(p["id"])
        elif kind == "declined":
            pay(method=CARD_DECLINED, confirm=True, connector=connector)
        elif kind == "manual":
            p = pay(capture_method="manual", confirm=True, connector=connector)
            if p.get("status") == "requires_capture":
                held.append(p["id"])
        elif kind in ("capture", "cancel") and held:
            c.post(f"/v1/payments/{held.pop(rng.randrange(len(held)))}/{kind}", json={})
        elif kind == "unconfirmed":
            unconfirmed.append(pay().get("id"))
        elif kind == "confirm" and unconfirmed:
            c.post(f"/v1/payments/{unconfirmed.pop()}/confirm", json={})
        elif kind == "refund" and succeeded:
            c.post("/v1/refunds", json={"payment_id": rng.choice(succeeded), "amount": 50})
        elif kind == "dispute":
            pay(method=CARD_DISPUTED, confirm=True, connector="mockstripe")
        elif kind == "upi":
            pay(method=UPI("success@upi"), confirm=True, connector="mockstripe")
        elif kind == "pending":
            pay(method=UPI("pending@upi"), confirm=True, connector="mockstripe")
        elif kind == "routed":
            pay(confirm=True)  # the merchant's routing: flaky first, then mockstripe
    # Disputes opened by webhook, some accepted.
    for d in c.get("/v1/disputes", params={"limit": 100}).json()["data"]:
        if rng.random() < 0.5:
            c.post(f"/v1/disputes/{d['id']}/accept", json={})


# --------------------------------------------------------------------------- direct counts


def direct_counts(payments: list, attempts: list) -> dict:
    """What every rollup row should hold, counted from the rows themselves (not from the log)."""
    out: dict = {}

    def add(at: dt.datetime, dimension: str, connector: str, status: str) -> None:
        for period_s in rollups.PERIODS:
            key = (period_s, rollups.bucket_start(at, period_s), dimension, connector, status)
            out[key] = out.get(key, 0) + 1

    for p in payments:
        add(p["created_at"], rollups.PAYMENT, "", p["status"])
    for a in attempts:
        add(a["created_at"], rollups.ATTEMPT, a["connector"], a["status"])
        if a["status"] != rollups.STARTED and latency.finite(a["latency_ms"]):
            add(a["created_at"], rollups.LATENCY, a["connector"], latency.bucket_of(a["latency_ms"]))
    return out


async def _snapshot(dsn: str, merchant_id: str) -> tuple[int, dict, dict]:
    """(events not folded yet, rollups, direct counts), all read in one REPEATABLE READ snapshot."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            lag = await conn.fetchval(
                "SELECT m.event_seq - coalesce(c.seq, -1) FROM merchants m"
                " LEFT JOIN stats_cursors c ON c.merchant_id = m.id WHERE m.id = $1", merchant_id)
            rows = await conn.fetch("SELECT period_s, bucket, dimension, connector, status, n FROM stats_rollups"
                                    " WHERE merchant_id = $1 AND n <> 0", merchant_id)
            payments = await conn.fetch("SELECT created_at, status FROM payments WHERE merchant_id = $1",
                                        merchant_id)
            attempts = await conn.fetch("SELECT created_at, connector, status, latency_ms FROM payment_attempts"
                                        " WHERE merchant_id = $1", merchant_id)
    finally:
        await conn.close()
    folded = {(r["period_s"], r["bucket"], r["dimension"], r["connector"], r["status"]): r["n"] for r in rows}
    return lag, folded, direct_counts(payments, attempts)


def assert_rollups_exact(dsn: str, merchant_id: str, timeout: float = 30) -> dict:
    """Wait for a snapshot in which the rollups include the whole log; then they must equal direct counts."""
    snapshot = wait_for(lambda: (s := asyncio.run(_snapshot(dsn, merchant_id)))[0] == 0 and s, timeout=timeout,
                        interval=0.2)
    _, folded, direct = snapshot
    assert folded == direct, {"only in rollups": {k: v for k, v in folded.items() if direct.get(k) != v},
                              "only in direct counts": {k: v for k, v in direct.items() if folded.get(k) != v}}
    return folded


def _new_merchant(server) -> tuple[str, str]:
    """(api key, merchant id) of a new merchant."""
    with server.client(ADMIN_TOKEN) as c:
        r = c.post("/admin/merchants", json={"name": "rollups"})
        expect(r, 201)
        return r.json()["api_key"], r.json()["merchant"]["id"]


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_direct_counts_after_mixed_traffic(new_database, start_server, seed):
    dsn = new_database("paycast_rollups")
    server = start_server(dsn, **ENV)
    key, merchant_id = _new_merchant(server)
    rng = random.Random(seed)
    with server.client(key) as c:
        expect(c.put("/v1/routing", json={"strategy": "priority", "connectors": ["flaky", "mockstripe"]}
                     ), 200)
        mixed_traffic(c, rng, 60)
        folded = assert_rollups_exact(dsn, merchant_id)
        # ... and the API answers from them: all-time counts and the last hour's totals.
        overview = c.get("/v1/stats/overview").json()
        stats = c.get("/v1/stats/payments", params={"window": "1h"}).json()
        listed = {}
        after = None
        while True:
            page = c.get("/v1/payments", params={"limit": 100, **({"starting_after": after} if after else {})}
                         ).json()
            for p in page["data"]:
                listed[p["status"]] = listed.get(p["status"], 0) + 1
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
    all_time = {k[4]: n for k, n in folded.items() if k[0] == rollups.ALL_TIME and k[2] == rollups.PAYMENT}
    # A webhook or the reconciler may move a payment between these reads (the exact comparison is the
    # one-snapshot one above); the number of payments does not change.
    assert sum(all_time.values()) == sum(overview["payments"].values()) == sum(stats["totals"].values()) \
        == sum(listed.values())
    assert {"succeeded", "failed"} <= {s for s, n in listed.items() if n}
    attempt_statuses = {k[4] for k in folded if k[2] == rollups.ATTEMPT}
    assert {"succeeded", "failed"} <= attempt_statuses, attempt_statuses
    done = run_check(dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stale_and_lost_rollups_are_rebuilt_from_the_log_on_start(new_database, start_server):
    dsn = new_database("paycast_rollups_rebuild")
    # An api-only process: no actor:rollups, so the rollups fall behind while payments move.
    api = start_server(dsn, PAYCAST_ROLE="api")
    key, merchant_id = _new_merchant(api)
    with api.client(key) as c:
        mixed_traffic(c, random.Random(7), 30)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        assert "actor:rollups" not in admin.get("/debug/tasks").text
    stale = asyncio.run(_snapshot(dsn, merchant_id))
    assert stale[0] > 0
    assert not stale[1]  # the log moved, the rollups did not
    api.stop()

    # Stale: a worker starts and catches up from the cursor.
    worker = start_server(dsn, PAYCAST_ROLE="worker")
    with httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        assert "actor:rollups" in admin.get("/debug/tasks").text
    assert assert_rollups_exact(dsn, merchant_id)
    worker.stop()

    # Lost rows (the cursor says they are folded): rebuilt at start. (Payments may have moved
    # meanwhile, the worker applying webhooks: the rollups must equal the rows as they are now.)
    db_fetch(dsn, "DELETE FROM stats_rollups WHERE merchant_id = $1", merchant_id)
    worker = start_server(dsn, PAYCAST_ROLE="worker")
    assert assert_rollups_exact(dsn, merchant_id)
    worker.stop()

    # Lost cursor (rows left): the rows are dropped and refolded, not added to.
    db_fetch(dsn, "DELETE FROM stats_cursors WHERE merchant_id = $1", merchant_id)
    db_fetch(dsn, "UPDATE stats_rollups SET n = n + 5 WHERE merchant_id = $1", merchant_id)
    start_server(dsn, PAYCAST_ROLE="worker")
    assert assert_rollups_exact(dsn, merchant_id)


def test_new_reads_are_the_callers_own(server, db_dsn):
    owner_key, owner_id = _new_merchant(server)
    intruder_key, _ = _new_merchant(server)
    with server.client(owner_key) as c:
        pay = c.post("/v1/payments", json=payment_body(confirm=True, connector="mockstripe",
                                                      customer_id="cus_isolated")).json()
        held = c.post("/v1/payments", json=payment_body(capture_method="manual", confirm=True,
                                                       connector="mockrazorpay", customer_id="cus_isolated")).json()
        assert pay["status"] == "succeeded"
        assert held["status"] == "requires_capture"
        wait_for(lambda: c.get("/v1/stats/overview").json()["payments"]["succeeded"] == 1)
    txn = pay["attempts"][0]["connector_txn_id"]
    with server.client(intruder_key) as c:
        overview = c.get("/v1/stats/overview", params={"window": "24h"}).json()
        assert set(overview["payments"].values()) == {0}
        assert overview["connectors"] == [] or all(h["attempts"] == 0 for h in overview["connectors"])
        for window in ("1h", "24h"):
            stats = c.get("/v1/stats/payments", params={"window": window}).json()
            assert set(stats["totals"].values()) == {0}
            assert stats["connectors"] == []
        for term in (pay["id"], txn, "cus_isolated", held["id"]):
            assert c.get("/v1/search", params={"q": term}).json()["data"] == []
        for name in ("processing_overdue", "review_required", "deliveries_failing"):
            assert c.get(f"/v1/stats/lists/{name}").json()["data"] == []
    # The owner sees its own through the same reads.
    with server.client(owner_key) as c:
        assert {p["id"] for p in c.get("/v1/search", params={"q": "cus_isolated"}).json()["data"]} == \
            {pay["id"], held["id"]}
        assert c.get("/v1/search", params={"q": txn}).json()["data"][0]["matched_on"] == "connector_txn_id"
    assert db_fetch(db_dsn, "SELECT count(*) AS n FROM stats_rollups WHERE merchant_id = $1 AND period_s = 0"
                    " AND dimension = 'payment' AND n <> 0", owner_id)[0]["n"] == 2
