"""Stripe under chaos: PaymentIntent and refund creates refused with 500s before
processing or processed with their answers lost (timeouts), and lost webhooks,
between Paycast and localstripe (through tests/stand_ins/stripe_chaos_proxy.py,
which also plays Stripe's idempotency layer that localstripe lacks).

Afterwards every payment ends as localstripe says it did (through the answers
that came, the webhooks that came, or the questions reconciliation asked with
the same idempotency keys), there is exactly one PaymentIntent per payment and
one refund per refund, and ``run.py check`` holds every invariant.
"""

from __future__ import annotations

import random
import time
from contextlib import closing

import pytest

from tests.e2e.test_stripe import WEBHOOK_ID, Merchant, txn_of
from tests.stand_ins.stripe_chaos_proxy import ChaosProxy
from tests.support import ServerProcess, run_check

PAYMENTS = 12
THREE_DS = "4000002500003155"
# What each kind of payment ends as: ours, then the PaymentIntent's at localstripe.
EXPECTED = {
    "visa": ("succeeded", "succeeded"),
    "visa_manual": ("requires_capture", "requires_capture"),
    "declined": ("failed", "requires_payment_method"),
    "3ds_passed": ("succeeded", "succeeded"),
    "3ds_failed": ("failed", "requires_payment_method"),
}


def _until(mismatches, timeout: float = 60, show=repr) -> None:
    """Poll until ``mismatches()`` is empty; at the deadline, fail showing what is still off."""
    deadline = time.monotonic() + timeout
    while (left := mismatches()) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left, show(left)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_refused_and_unanswered_calls_and_lost_webhooks_keep_the_invariants(new_database, localstripe):
    rng = random.Random(20)
    dsn = new_database("paycast_stripe_chaos")
    with ChaosProxy(localstripe.url, hold_s=2.5) as proxy:
        proxy.fault = lambda method, path: rng.choice([None, None, "refuse", "lose"]) \
            if path in ("/v1/payment_intents", "/v1/refunds") else None
        proxy.lose_webhook = lambda body: rng.random() < 0.5
        # A 3-D Secure payment whose webhook is lost is asked at Stripe at its action deadline.
        with ServerProcess(dsn, PAYCAST_STRIPE_API_BASE=proxy.url, PAYCAST_CONNECTOR_TIMEOUT_S="1",
                           PAYCAST_PROCESSING_DEADLINE_S="1", PAYCAST_RECONCILE_INTERVAL_S="0.2",
                           PAYCAST_ACTION_DEADLINE_S="8", PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true",
                           # Half the creates fail on purpose: the account's circuit must not open
                           # (it would refuse the refunds, a different story).
                           PAYCAST_BREAKER_FAILURE_THRESHOLD="1").start() as proc:
            with closing(Merchant(proc, localstripe)) as merchant:
                localstripe.register_webhook(WEBHOOK_ID, proxy.hook_url(merchant.webhook_url),
                                             merchant.webhook_secret)
                kinds = [list(EXPECTED)[i % len(EXPECTED)] for i in range(PAYMENTS)]
                rng.shuffle(kinds)
                payments = []
                for kind in kinds:
                    token = localstripe.card_payment_method(THREE_DS) if kind.startswith("3ds") else \
                        "pm_card_chargeCustomerFail" if kind == "declined" else "pm_card_visa"
                    payments.append((kind, merchant.pay(token, "manual" if kind == "visa_manual" else "automatic")))

                # The customer acts on each 3-D Secure challenge once Paycast shows it
                # (after reconciliation, when the create's answer was lost).
                for kind, payment in payments:
                    if kind.startswith("3ds"):
                        waiting = merchant.wait_status(payment["id"], "requires_action", timeout=30)
                        localstripe.authenticate(txn_of(waiting), success=kind == "3ds_passed")

                finals = {p["id"]: EXPECTED[kind][0] for kind, p in payments}
                _until(lambda: {pid: (b["status"], b["attempts"], b["last_error"]) for pid, status in finals.items()
                                if (b := merchant.get(pid))["status"] != status})

                refunds = []
                for kind, payment in payments:
                    if kind == "visa":
                        r = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 500})
                        assert r.status_code in (200, 201), r.text
                        refunds.append((payment["id"], r.json()["id"]))
                _until(lambda: {rid: r for _, rid in refunds
                                if (r := merchant.client.get(f"/v1/refunds/{rid}").json())["status"] != "succeeded"}, show=str)

                intents = localstripe.payment_intents()
                for kind, payment in payments:
                    body = merchant.get(payment["id"])
                    [pi] = [p for p in intents if p["metadata"].get("payment_id") == payment["id"]]
                    assert (body["status"], pi["status"]) == EXPECTED[kind], (kind, body, pi)
                    # localstripe's 402 does not name the PaymentIntent (Stripe's does).
                    assert txn_of(body) in (pi["id"], None if kind == "declined" else pi["id"])
                    assert len(body["attempts"]) == 1
                for payment_id, refund_id in refunds:
                    [held] = localstripe.refunds_of(txn_of(merchant.get(payment_id)))
                    assert (held["metadata"]["refund_id"], held["amount"]) == (refund_id, 500)
    assert proxy.faults["refuse"], (proxy.faults, proxy.webhooks)
    assert proxy.faults["lose"], (proxy.faults, proxy.webhooks)
    assert proxy.webhooks["lost"], (proxy.faults, proxy.webhooks)
    result = run_check(dsn)
    assert result.returncode == 0, result.stdout
