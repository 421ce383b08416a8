"""No acknowledged webhook is lost or applied twice: across kill -9, across two
processes on one database, and under a chaos run of the simulator."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support import (CARD_DECLINED, CARD_OK, UPI, db_fetch, expect, payment_body, run_check, sign_stripe,
                           stop_all, wait_for)


def _pending_payments(client, n):
    return [client.post("/v1/payments", json=payment_body(100 + i, method=UPI("pending@upi"), confirm=True)).json()
            for i in range(n)]


def _success_webhook(pay, event_id):
    body = json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": pay["attempts"][0]["connector_txn_id"], "amount": pay["amount"],
                                           "currency": "inr", "status": "succeeded",
                                           "metadata": {"payment_id": pay["id"]}}}}).encode()
    return body, sign_stripe(body)


def test_kill9_with_unprocessed_inbox_rows_processes_them_after_restart(new_database, start_server):
    dsn = new_database("paycast_inbox_crash")
    server = start_server(dsn)
    api_key = server.create_merchant()
    with server.client(api_key) as c:
        pays = _pending_payments(c, 30)
    acked = []
    with server.client() as anon:
        for i, pay in enumerate(pays[:20]):
            body, headers = _success_webhook(pay, f"evt_crash_{i}")
            expect(anon.post("/webhooks/mockstripe", content=body, headers=headers), 200)
            acked.append(pay["id"])
    server.kill9()
    # Rows acknowledged by a process that then died before applying them, one of them
    # still under that process's lease.
    for i, pay in enumerate(pays[20:]):
        body, _ = _success_webhook(pay, f"evt_orphan_{i}")
        db_fetch(dsn, "INSERT INTO webhook_inbox (id, connector, event_id, kind, connector_txn_id, payment_id,"
                      " raw_body, claimed_until) VALUES ($1, 'mockstripe', $2, 'payment.succeeded', $3, $4, $5,"
                      " CASE WHEN $6 THEN now() + interval '1 second' END)",
                 f"ibx_ORPHAN{i:02d}", f"evt_orphan_{i}", pay["attempts"][0]["connector_txn_id"], pay["id"],
                 body.decode(), i == 0)
        acked.append(pay["id"])
    restarted = start_server(dsn)
    try:
        with restarted.client(api_key) as c:
            wait_for(lambda: all(c.get(f"/v1/payments/{p}").json()["status"] == "succeeded" for p in acked),
                     timeout=30)
        rows = db_fetch(dsn, "SELECT status FROM webhook_inbox")
        assert len(rows) == 30
        assert {r["status"] for r in rows} == {"applied"}
        assert run_check(dsn).returncode == 0
    finally:
        restarted.stop()


def test_two_processes_one_database_apply_each_webhook_once(new_database, start_server):
    dsn = new_database("paycast_two")
    a, b = start_server(dsn), start_server(dsn)
    try:
        api_key = a.create_merchant()
        with a.client(api_key) as c:
            pays = _pending_payments(c, 40)
        jobs = []
        for i, pay in enumerate(pays):
            body, headers = _success_webhook(pay, f"evt_two_{i}")
            jobs += [(a, body, headers), (b, body, headers), (a, body, headers), (b, body, headers)]
        random.Random(7).shuffle(jobs)

        def send(job):
            server, body, headers = job
            with server.client() as anon:
                return anon.post("/webhooks/mockstripe", content=body, headers=headers).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(send, jobs)) == {200}
        with b.client(api_key) as c:
            wait_for(lambda: all(c.get(f"/v1/payments/{p['id']}").json()["status"] == "succeeded" for p in pays),
                     timeout=30)
            events = c.get("/v1/events", params={"type": "payment.succeeded", "limit": 100}).json()["data"]
            assert len(events) == 40
            assert len({e["data"]["object"]["id"] for e in events}) == 40
        rows = db_fetch(dsn, "SELECT status, count(*) AS n FROM webhook_inbox GROUP BY status")
        assert rows == [{"status": "applied", "n": 40}]
        assert run_check(dsn).returncode == 0
    finally:
        stop_all([a, b])


def test_chaos_500_payments_with_duplicates_and_reordering(new_database, start_server):
    dsn = new_database("paycast_chaos")
    server = start_server(dsn, PAYCAST_SIM_DUPLICATE_RATE="0.2", PAYCAST_SIM_REORDER="true",
                           PAYCAST_SIM_DELAY_MS="20", PAYCAST_PROCESSING_DEADLINE_S="1",
                           PAYCAST_RECONCILE_INTERVAL_S="0.2")
    try:
        api_key = server.create_merchant()
        rng = random.Random(42)
        methods = [UPI("success@upi"), UPI("failure@upi"), UPI("pending@upi"), CARD_OK, CARD_DECLINED]

        def create(i):
            method = rng.choice(methods)
            connector = rng.choice(["mockstripe", "mockrazorpay"])
            with server.client(api_key) as c:
                r = c.post("/v1/payments", json=payment_body(100 + i, method=method, connector=connector,
                                                             confirm=True))
                expect(r, 201)
                return r.json()["id"], method

        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(create, range(500)))

        def settled():
            rows = db_fetch(dsn, "SELECT count(*) AS n FROM payments WHERE status = 'processing'")
            pending = db_fetch(dsn, "SELECT count(*) AS n FROM webhook_inbox WHERE processed_at IS NULL")
            return rows[0]["n"] == 0 and pending[0]["n"] == 0

        wait_for(settled, timeout=90, interval=0.5)
        statuses = {r["id"]: r["status"] for r in db_fetch(dsn, "SELECT id, status FROM payments")}
        for pay_id, method in created:
            expected = "failed" if method in (UPI("failure@upi"), CARD_DECLINED) else "succeeded"
            assert statuses[pay_id] == expected, (pay_id, method)
        inbox = db_fetch(dsn, "SELECT status, count(*) AS n FROM webhook_inbox GROUP BY status")
        by_status = {r["status"]: r["n"] for r in inbox}
        assert by_status.get("applied", 0) > 0
        assert set(by_status) <= {"applied", "ignored"}
        # Every payment that got an outcome by webhook has exactly one applied row.
        per_payment = db_fetch(dsn, "SELECT payment_id, count(*) AS n FROM webhook_inbox WHERE status = 'applied'"
                                    " GROUP BY payment_id HAVING count(*) > 1")
        assert per_payment == []
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        server.stop()
