"""SIGKILL under mixed load (payments, webhooks, refunds, withdrawals), restart,
let the server finish what was acknowledged, then ``run.py check``: every
invariant of docs/architecture.md holds."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from tests.support import CARD_DECLINED, CARD_OK, UPI, ServerProcess, db_fetch, payment_body, run_check, wait_for


# Expected answers per request kind; anything else (a 500, a 400) fails the test.
EXPECTED = {"payment": {201}, "refund": {201, 409}, "deposit": {201}, "withdrawal": {201, 409}}


def _worker(server: ServerProcess, api_key: str, account_id: str, seed: int, stop: threading.Event,
            acked: dict, unexpected: list) -> None:
    """Mixed writes until told to stop; records every acknowledged object in ``acked``."""
    rng = random.Random(seed)
    with server.client(api_key, timeout=5) as c:
        while not stop.is_set():
            try:
                roll = rng.random()
                if roll < 0.45:
                    kind = "payment"
                    method = rng.choice([CARD_OK, CARD_OK, CARD_DECLINED, UPI("success@upi"), UPI("failure@upi")])
                    r = c.post("/v1/payments", json=payment_body(rng.randrange(200, 5000), method=method,
                                                                 confirm=True))
                elif roll < 0.65 and acked["payment"]:
                    kind = "refund"
                    succeeded = [p for p in list(acked["payment"].values()) if p["status"] == "succeeded"]
                    if not succeeded:
                        continue
                    r = c.post("/v1/refunds", json={"payment_id": rng.choice(succeeded)["id"],
                                                    "amount": rng.randrange(1, 150)})
                elif roll < 0.8:
                    kind = "deposit"
                    r = c.post(f"/v1/accounts/{account_id}/deposits",
                               json={"amount": rng.randrange(100, 1000), "payment_method": CARD_OK})
                else:
                    kind = "withdrawal"
                    r = c.post(f"/v1/accounts/{account_id}/withdrawals", json={"amount": rng.randrange(50, 400)})
                if r.status_code not in EXPECTED[kind] and r.status_code != 503:
                    unexpected.append((kind, r.status_code, r.text))
                elif r.status_code == 201:
                    acked[kind][r.json()["id"]] = r.json()
            except httpx.HTTPError:
                time.sleep(0.05)  # the server is gone (killed): keep trying until told to stop


@pytest.mark.slow
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
    acked: dict[str, dict] = {"payment": {}, "refund": {}, "deposit": {}, "withdrawal": {}}
    unexpected: list = []
    workers = [threading.Thread(target=_worker, args=(server, api_key, account["id"], i, stop, acked, unexpected))
               for i in range(6)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(acked["payment"]) >= 60, timeout=60, interval=0.1)
        server.kill9()
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert not unexpected, unexpected[:5]
    restarted = start_server(dsn, **settings)

    def quiet():
        busy = db_fetch(dsn, "SELECT (SELECT count(*) FROM payments WHERE status = 'processing')"
                             " + (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL) AS n")
        return busy[0]["n"] == 0

    wait_for(quiet, timeout=60, interval=0.5)
    with restarted.client(api_key) as c:
        # Every acknowledged object survived the kill, and what was acknowledged as final stayed so.
        for pay in acked["payment"].values():
            got = c.get(f"/v1/payments/{pay['id']}").json()
            if pay["status"] in ("succeeded", "failed", "canceled"):
                assert (got["status"], got["amount_received"]) == (pay["status"], pay["amount_received"]), (pay, got)
            else:
                assert got["status"] in ("processing", "succeeded", "failed"), got
        for refund in acked["refund"].values():
            got = c.get(f"/v1/refunds/{refund['id']}").json()
            assert (got["payment_id"], got["amount"]) == (refund["payment_id"], refund["amount"]), got
        for kind in ("deposit", "withdrawal"):
            for txn in acked[kind].values():
                got = c.get(f"/v1/transactions/{txn['id']}").json()
                assert (got["type"], got["amount"]) == (kind, txn["amount"]), got
    check = run_check(dsn)
    assert check.returncode == 0, check.stdout
