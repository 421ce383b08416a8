"""Razorpay under webhook chaos: lost, duplicated and reordered deliveries and
failed-then-succeeded orders, against the fake Razorpay server; every invariant
of ``run.py check`` holds afterwards and every paid order ends ``succeeded``
(through its webhooks, or through the question asked at Razorpay when they were lost).
"""

from __future__ import annotations

import json
import random

import pytest

from tests.e2e.test_razorpay import Merchant, order_of
from tests.fakes.fake_razorpay import FakeRazorpay
from tests.support import ServerProcess, run_check, stop_all, wait_for

PAYMENTS = 12


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_lost_duplicated_reordered_webhooks_and_retried_orders_keep_the_invariants(new_database):
    rng = random.Random(21)
    dsn = new_database("paycast_rzp_chaos")
    with FakeRazorpay(hang_s=3) as fake:
        # A payment whose webhooks were all lost is asked at Razorpay at its action deadline.
        proc = ServerProcess(dsn, PAYCAST_RAZORPAY_API_BASE=fake.url, PAYCAST_ACTION_DEADLINE_S="4",
                             PAYCAST_CONNECTOR_TIMEOUT_S="1", PAYCAST_RECONCILE_INTERVAL_S="0.2",
                             PAYCAST_PROCESSING_DEADLINE_S="1").start()
        try:
            merchant = Merchant(proc, fake)
            payments = [merchant.confirm(capture_method=rng.choice(["automatic", "manual"]),
                                         method=rng.choice(["upi", "card", "netbanking"]))
                        for _ in range(PAYMENTS)]
            fake.hold_webhooks = True
            for payment in payments:
                order_id = order_of(payment)
                for _ in range(rng.randrange(3)):  # failed tries first, on the same order
                    fake.pay(order_id, succeed=False)
                fake.pay(order_id, method=payment["payment_method"]["type"])
            fake.hold_webhooks = False
            lost = {order_of(p) for p in rng.sample(payments, 3)}

            def order_of_delivery(delivery) -> str | None:
                payload = json.loads(delivery.raw)["payload"]
                return (payload.get("payment") or {}).get("entity", {}).get("order_id")

            answers = fake.release(reverse=True, duplicate=True, lose=lambda d: order_of_delivery(d) in lost)
            assert answers
            assert all(a == 200 for a in answers)

            expected = {p["id"]: "succeeded" if p["capture_method"] == "automatic" else "requires_capture"
                        for p in payments}
            wait_for(lambda: all(merchant.get(pid)["status"] == status for pid, status in expected.items()),
                     timeout=60, interval=0.3)
            for payment in payments:
                body = merchant.get(payment["id"])
                assert body["amount_received"] == (payment["amount"] if expected[payment["id"]] == "succeeded" else 0)
                assert len(body["attempts"]) == 1  # one order per payment, whatever the tries
            assert len(fake.orders) == PAYMENTS
            assert fake.count("POST", r"/v1/orders") == PAYMENTS
            merchant.client.close()
        finally:
            stop_all([proc])
    checked = run_check(dsn)
    assert checked.returncode == 0, checked.stdout + checked.stderr
