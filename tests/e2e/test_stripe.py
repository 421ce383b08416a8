"""Stripe end to end: a real Paycast server, a merchant's Stripe account, and
localstripe (tests/stand_ins/localstripe.py, one process per session) playing Stripe.

Payment → PaymentIntent at localstripe → (3-D Secure) → signed webhook to
``/webhooks/stripe/{mca_id}`` → the payment moves. Every flow is checked on our
side **and** at localstripe (``GET /v1/payment_intents/{id}``, ``/v1/refunds``).
What localstripe cannot do (idempotency keys, return_url, refund and dispute
webhooks, decline codes) is covered by tests/integration/test_stripe_wire.py and
the unit tests of domain.stripe_objects / domain.stripe_events.
"""

from __future__ import annotations

import json
from contextlib import closing
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from domain.signatures import stripe_header
from tests.support import ADMIN_TOKEN, ServerProcess, db_fetch, expect, run_check, wait_for

AMOUNT = 2500  # €25.00
# localstripe sends every event to every registered webhook: one registration,
# re-pointed at each test's account, so an event goes to the account that made it.
WEBHOOK_ID = "paycast-e2e"
WEBHOOK_SECRETS: list[str] = []  # every account's, for the log check at the end


def _server(dsn: str, localstripe, **env: str) -> ServerProcess:
    return ServerProcess(dsn, PAYCAST_STRIPE_API_BASE=localstripe.url, PAYCAST_CONNECTOR_TIMEOUT_S="5",
                         PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true", **env).start()


@pytest.fixture(scope="module")
def stripe_dsn(new_database):
    return new_database("paycast_stripe")


@pytest.fixture(scope="module")
def stripe_server(stripe_dsn, localstripe):
    with _server(stripe_dsn, localstripe) as proc:
        yield proc


@pytest.fixture(scope="module")
def impatient_server(stripe_dsn, localstripe):
    """A second process on the same database whose payments give the customer 1.2 s to act;
    it logs at DEBUG (the Stripe SDK's request logs included) for the secrets check."""
    with _server(stripe_dsn, localstripe, PAYCAST_ACTION_DEADLINE_S="1.2", PAYCAST_RECONCILE_INTERVAL_S="0.05",
                 PAYCAST_LOG_LEVEL="DEBUG") as proc:
        yield proc


class Merchant:
    """A Paycast merchant with its Stripe account (at localstripe) added, and a client for it."""

    def __init__(self, server: ServerProcess, localstripe) -> None:
        self.localstripe = localstripe
        self.client = server.client(server.create_merchant())
        self.webhook_secret = "whsec_" + secrets.token_urlsafe(24)
        WEBHOOK_SECRETS.append(self.webhook_secret)
        r = self.client.post("/v1/connector_accounts", json={
            "connector": "stripe", "label": "Stripe test", "webhook_secret": self.webhook_secret,
            "credentials": {"secret_key": localstripe.secret_key}})
        expect(r, 201)
        self.account = r.json()
        self.webhook_url = server.url + self.account["webhook_path"]
        localstripe.register_webhook(WEBHOOK_ID, self.webhook_url, self.webhook_secret)

    def close(self) -> None:
        self.client.close()

    def pay(self, token: str, capture_method: str = "automatic", **extra) -> dict:
        r = self.client.post("/v1/payments", json={
            "amount": AMOUNT, "currency": "EUR", "payment_method": {"type": "card", "token": token},
            "capture_method": capture_method, "confirm": True, **extra})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def get(self, payment_id: str) -> dict:
        return self.client.get(f"/v1/payments/{payment_id}").json()

    def wait_status(self, payment_id: str, status: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (p := self.get(payment_id))["status"] == status and p, timeout)

    def send_event(self, etype: str, obj: dict) -> str:
        """Deliver a Stripe event signed with the account's secret, as Stripe does (for the
        types localstripe never sends); its event id."""
        now = int(time.time())
        event_id = "evt_" + secrets.token_hex(12)
        raw = json.dumps({"id": event_id, "object": "event", "type": etype, "created": now,
                          "livemode": False, "data": {"object": obj}}).encode()
        r = httpx.post(self.webhook_url, content=raw, timeout=10, headers={
            "Stripe-Signature": stripe_header(self.webhook_secret, raw, now), "Content-Type": "application/json"})
        expect(r, 200)
        assert r.json()["duplicate"] is False, r.text
        return event_id


def txn_of(payment: dict) -> str:
    return payment["attempts"][-1]["connector_txn_id"]


@pytest.fixture
def merchant(stripe_server, localstripe):
    with closing(Merchant(stripe_server, localstripe)) as m:
        yield m


def test_account_is_tried_at_stripe_and_masked(merchant, stripe_server, localstripe):
    account = merchant.account
    assert (account["connector"], account["status"], account["livemode"]) == ("stripe", "active", False)
    assert localstripe.secret_key not in json.dumps(account)
    assert merchant.webhook_secret not in json.dumps(account)
    assert account["webhook_path"] == f"/webhooks/stripe/{account['id']}"
    with stripe_server.client(stripe_server.create_merchant()) as other:
        r = other.post("/v1/connector_accounts", json={"connector": "stripe", "webhook_secret": "whsec_x" * 4,
                                                        "credentials": {"secret_key": "rk_test_refused_by_it"}})
    expect(r, 400)
    assert r.json()["error"]["code"] == "connector_credentials_invalid"


def test_token_payment_succeeds(merchant, localstripe):
    payment = merchant.pay("pm_card_visa")
    assert payment["status"] == "succeeded", payment
    assert payment["connector"] == "stripe"
    assert payment["next_action"] is None
    assert payment["payment_method"] == {"type": "card", "token": "pm_card_visa",
                                         "card": {"brand": "visa", "last4": "4242"}}
    pi = localstripe.payment_intent(txn_of(payment))
    assert (pi["status"], pi["amount"], pi["currency"]) == ("succeeded", AMOUNT, "eur")
    assert pi["metadata"]["payment_id"] == payment["id"]
    assert pi["metadata"]["attempt_id"] == payment["attempts"][-1]["id"]


def test_declined_card(merchant, localstripe):
    payment = merchant.pay("pm_card_chargeCustomerFail")
    assert payment["status"] == "failed", payment
    assert payment["last_error"]["code"] == "card_declined"
    assert payment["attempts"][-1]["error_code"] == "card_declined"
    [pi] = [p for p in localstripe.payment_intents() if p["metadata"].get("payment_id") == payment["id"]]
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["code"] == "card_declined"


def test_manual_capture_of_part(merchant, localstripe):
    payment = merchant.pay("pm_card_visa", "manual")
    assert payment["status"] == "requires_capture", payment
    assert localstripe.payment_intent(txn_of(payment))["status"] == "requires_capture"
    r = merchant.client.post(f"/v1/payments/{payment['id']}/capture", json={"amount": 1000})
    expect(r, 200)
    assert (r.json()["status"], r.json()["amount_received"]) == ("succeeded", 1000)
    pi = localstripe.payment_intent(txn_of(payment))
    assert pi["status"] == "succeeded"
    assert pi["latest_charge"]["captured"] is True
    assert pi["latest_charge"]["amount_refunded"] == AMOUNT - 1000  # localstripe's model of the uncaptured rest


def test_cancel_an_authorisation(merchant, localstripe):
    payment = merchant.pay("pm_card_visa", "manual")
    r = merchant.client.post(f"/v1/payments/{payment['id']}/cancel", json={})
    expect(r, 200)
    assert r.json()["status"] == "canceled"
    assert localstripe.payment_intent(txn_of(payment))["status"] == "canceled"


def test_refund(merchant, localstripe):
    payment = merchant.pay("pm_card_visa")
    r = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 700})
    assert r.status_code in (200, 201), r.text
    refund = wait_for(lambda: (x := merchant.client.get(f"/v1/refunds/{r.json()['id']}").json())["status"]
                      == "succeeded" and x)
    [held] = localstripe.refunds_of(txn_of(payment))
    assert (held["amount"], held["status"], held["metadata"]["refund_id"]) == (700, "succeeded", refund["id"])
    assert held["metadata"]["payment_id"] == payment["id"]


def test_three_d_secure_authenticated_settles_by_webhook(merchant, localstripe):
    token = localstripe.card_payment_method("4000002500003155")
    payment = merchant.pay(token)
    assert payment["status"] == "requires_action", payment
    pi = localstripe.payment_intent(txn_of(payment))
    assert pi["status"] == "requires_action"
    assert payment["next_action"] == {"type": "connector_sdk", "connector_sdk": {
        "connector": "stripe", "data": {"client_secret": pi["client_secret"]}}}
    localstripe.authenticate(pi["id"], success=True)  # the customer passes 3-D Secure
    done = merchant.wait_status(payment["id"], "succeeded")  # by localstripe's signed payment_intent.succeeded
    assert done["next_action"] is None
    assert done["amount_received"] == AMOUNT
    assert localstripe.payment_intent(pi["id"])["status"] == "succeeded"


def test_three_d_secure_failed_settles_by_webhook(merchant, localstripe):
    payment = merchant.pay(localstripe.card_payment_method("4000002500003155"))
    assert payment["status"] == "requires_action", payment
    pi = localstripe.authenticate(txn_of(payment), success=False)
    assert pi["status"] == "requires_payment_method"
    # localstripe sends no event for a failed authentication; Stripe sends
    # payment_intent.payment_failed with the PaymentIntent as it now stands.
    merchant.send_event("payment_intent.payment_failed", localstripe.payment_intent(pi["id"]))
    failed = merchant.wait_status(payment["id"], "failed")
    assert failed["last_error"]["code"] == "payment_intent_authentication_failure"


def test_cancel_while_the_customer_has_to_act(merchant, localstripe):
    payment = merchant.pay(localstripe.card_payment_method("4000002500003155"))
    r = merchant.client.post(f"/v1/payments/{payment['id']}/cancel", json={})
    expect(r, 200)
    assert r.json()["status"] == "canceled"
    assert r.json()["next_action"] is None
    assert localstripe.payment_intent(txn_of(payment))["status"] == "canceled"


def test_an_event_for_another_accounts_payment_moves_nothing(stripe_server, localstripe):
    with closing(Merchant(stripe_server, localstripe)) as owner, \
            closing(Merchant(stripe_server, localstripe)) as stranger:
        payment = owner.pay(localstripe.card_payment_method("4000002500003155"))
        pi = localstripe.payment_intent(txn_of(payment))
        event_id = stranger.send_event("payment_intent.succeeded", pi | {"status": "succeeded"})
        with stripe_server.client(ADMIN_TOKEN) as admin:
            item = wait_for(lambda: next((i for i in admin.get("/admin/inbox", params={
                "connector": "stripe", "limit": 100}).json()["data"] if i["event_id"] == event_id
                and i["status"] != "pending"), None))
        assert item["status"] != "applied", item
        assert owner.get(payment["id"])["status"] == "requires_action"


def test_dispute_opened_and_lost_by_stripe_events(merchant, localstripe):
    # localstripe has no disputes: the events are Stripe's documented Dispute objects,
    # signed with the account's secret, naming the PaymentIntent localstripe charged.
    payment = merchant.pay("pm_card_visa")
    pi = txn_of(payment)
    dispute = {"id": "du_" + secrets.token_hex(8), "object": "dispute", "amount": 1500, "currency": "eur",
               "charge": localstripe.payment_intent(pi)["latest_charge"]["id"], "payment_intent": pi,
               "reason": "fraudulent", "status": "needs_response", "metadata": {}}
    merchant.send_event("charge.dispute.created", dispute)
    opened = wait_for(lambda: merchant.client.get("/v1/disputes", params={"payment_id": payment["id"]}).json()["data"])
    assert [(d["status"], d["amount"]) for d in opened] == [("needs_response", 1500)]
    merchant.send_event("charge.dispute.closed", dispute | {"status": "lost"})
    wait_for(lambda: merchant.client.get(f"/v1/disputes/{opened[0]['id']}").json()["status"] == "lost")


def test_abandoned_three_d_secure_is_canceled_at_stripe(impatient_server, localstripe):
    with closing(Merchant(impatient_server, localstripe)) as merchant:
        payment = merchant.pay(localstripe.card_payment_method("4000002500003155"))
        assert payment["status"] == "requires_action", payment
        canceled = merchant.wait_status(payment["id"], "canceled")
    assert canceled["cancellation_reason"] == "abandoned"
    assert canceled["next_action"] is None
    assert localstripe.payment_intent(txn_of(payment))["status"] == "canceled"


@pytest.mark.slow
def test_webhook_and_reconciliation_settle_at_once_and_once(stripe_dsn, impatient_server, localstripe):
    # The customer passes 3-D Secure right after the confirm; the action deadline
    # (1.2 s after the confirm) and localstripe's webhook (sent 1 s after the
    # authentication) then come due together: the reconciler's retrieve and the
    # webhook's apply race to settle each payment.
    with closing(Merchant(impatient_server, localstripe)) as merchant:
        tokens = [localstripe.card_payment_method("4000002500003155") for _ in range(4)]
        payments = []
        for token in tokens:
            payments.append(merchant.pay(token))
            localstripe.authenticate(txn_of(payments[-1]), success=True)
        settled = [merchant.wait_status(p["id"], "succeeded") for p in payments]
    for payment in settled:
        assert (payment["amount_received"], payment["cancellation_reason"]) == (AMOUNT, None)
        events = db_fetch(stripe_dsn, "SELECT type FROM events WHERE object_id = $1 AND type = "
                                      "'payment.succeeded'", payment["id"])
        assert len(events) == 1, events
    assert run_check(stripe_dsn).returncode == 0


@pytest.mark.slow
def test_two_processes_confirming_one_payment_create_one_payment_intent(stripe_dsn, stripe_server, impatient_server,
                                                                        localstripe):
    with closing(Merchant(stripe_server, localstripe)) as merchant:
        r = merchant.client.post("/v1/payments", json={
            "amount": AMOUNT, "currency": "EUR", "payment_method": {"type": "card", "token": "pm_card_visa"}})
        assert r.status_code in (200, 201), r.text
        payment_id = r.json()["id"]
        barrier = threading.Barrier(2)

        def confirm(server: ServerProcess) -> int:
            with server.client(merchant.client.headers["Authorization"].split()[1]) as c:
                expect(c.get("/healthz"), 200)
                barrier.wait(timeout=30)
                return c.post(f"/v1/payments/{payment_id}/confirm", json={}).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(confirm, [stripe_server, impatient_server]))
        assert 200 in codes, codes
        merchant.wait_status(payment_id, "succeeded")
    intents = [p for p in localstripe.payment_intents() if p["metadata"].get("payment_id") == payment_id]
    assert len(intents) == 1, intents
    assert db_fetch(stripe_dsn, "SELECT count(*) AS n FROM payment_attempts WHERE payment_id = $1",
                    payment_id)[0]["n"] == 1
    assert run_check(stripe_dsn).returncode == 0


def test_no_secret_in_the_debug_log(impatient_server, localstripe):
    # The DEBUG process adds an account, charges with 3-D Secure, receives the signed
    # webhook (and whatever the other tests of this module made it do).
    with closing(Merchant(impatient_server, localstripe)) as merchant:
        payment = merchant.pay(localstripe.card_payment_method("4000002500003155"))
        localstripe.authenticate(txn_of(payment), success=True)
        merchant.wait_status(payment["id"], "succeeded")
    # It did log at DEBUG: our webhook lines and the SDK's own request logs (with the posted parameters).
    # (The payment may have settled by the deadline's retrieve before the webhook came.)
    log = wait_for(lambda: (text := "".join(impatient_server.stderr_lines)) and
                   f"webhook received: stripe/{merchant.account['id']}" in text and text)
    assert "Request to Stripe api" in log
    assert "Post details" in log
    for secret in [localstripe.secret_key, *WEBHOOK_SECRETS]:
        assert secret not in log
