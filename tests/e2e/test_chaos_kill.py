"""SIGKILL under mixed load (payments, webhooks, refunds, withdrawals), restart,
let the server finish what was acknowledged, then ``run.py check``: every
invariant of DESIGN.md holds."""

from __future__ import annotations

import random
import threading
import time

import httpx

from tests.support import CARD_DECLINED, CARD_OK, UPI, ServerProcess, db_fetch, payment_body, run_check, wait_for


def _worker(server: ServerProcess, api_key: str, account_id: str, seed: int, stop: threading.Event,
            acked: list[str]) -> None:
    rng = random.Random(seed)
    with server.client(api_key, timeout=5) as c:
        while not stop.is_set():
            try:
                roll = rng.random()
                if roll < 0.45:
                    method = rng.choice([CARD_OK, CARD_OK, CARD_DECLINED, UPI("success@upi"), UPI("failure@upi")])
                    r = c.post("/v1/payments", json=payment_body(rng.randrange(200, 5000), method=method,
                                                                 confirm=True))
                    if r.status_code == 201:
                        acked.append(r.json()["id"])
                elif roll < 0.65 and acked:
                    c.post("/v1/refunds", json={"payment_id": rng.choice(acked), "amount": rng.randrange(1, 150)})
                elif roll < 0.8:
                    c.post(f"/v1/accounts/{account_id}/deposits",
                           json={"amount": rng.randrange(100, 1000), "payment_method": CARD_OK})
                else:
                    c.post(f"/v1/accounts/{account_id}/withdrawals", json={"amount": rng.randrange(50, 400)})
            except httpx.HTTPError:
                time.sleep(0.05)  # the server is gone (killed): keep trying until told to stop


def test_sigkill_under_mixed_load_then_check(new_database, start_server):
    dsn = new_database("paycast_kill")
    settings = {"PAYCAST_PROCESSING_DEADLINE_S": "1", "PAYCAST_RECONCILE_INTERVAL_S": "0.2",
                "PAYCAST_SIM_DELAY_MS": "20"}
    server = start_server(dsn, **settings)
    api_key = server.create_merchant("chaos")
    with server.client(api_key) as c:
        account = c.post("/v1/accounts", json={"customer_id": "cus_chaos", "currency": "INR"}).json()
        c.post(f"/v1/accounts/{account['id']}/deposits", json={"amount": 50_000, "payment_method": CARD_OK})
    stop = threading.Event()
    acked: list[str] = []
    workers = [threading.Thread(target=_worker, args=(server, api_key, account["id"], i, stop, acked))
               for i in range(6)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(acked) >= 60, timeout=60, interval=0.1)
        server.kill9()
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    restarted = start_server(dsn, **settings)
    try:
        def quiet():
            busy = db_fetch(dsn, "SELECT (SELECT count(*) FROM payments WHERE status = 'processing')"
                                 " + (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL) AS n")
            return busy[0]["n"] == 0

        wait_for(quiet, timeout=60, interval=0.5)
        with restarted.client(api_key) as c:
            for pay_id in acked:  # every acknowledged payment survived the kill
                assert c.get(f"/v1/payments/{pay_id}").status_code == 200
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        restarted.stop()
