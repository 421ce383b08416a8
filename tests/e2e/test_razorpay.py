"""Razorpay end to end: a real Paycast server, a merchant's Razorpay account, and the
fake Razorpay server (tests/fakes/fake_razorpay.py) playing Razorpay and Checkout.

Order → Checkout (the fake "pays") → signed webhook to ``/webhooks/razorpay/{mca_id}``
→ the payment moves; each flow is checked on our side **and** at the fake (what
reached "Razorpay", and how many times: Razorpay has no idempotency keys).
"""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes.fake_razorpay import FakeRazorpay
from tests.support import ADMIN_TOKEN, ServerProcess, db_fetch, expect, run_check, stop_all, wait_for

ORDERS = r"/v1/orders"
CAPTURE = r"/v1/payments/\w+/capture"
REFUND = r"/v1/payments/\w+/refund"
AMOUNT = 49900  # ₹499.00, in paise


@pytest.fixture(scope="module")
def fake():
    with FakeRazorpay(hang_s=4) as server:
        yield server


def _server(dsn: str, fake: FakeRazorpay, **env: str) -> ServerProcess:
    return ServerProcess(dsn, PAYCAST_RAZORPAY_API_BASE=fake.url, PAYCAST_CONNECTOR_TIMEOUT_S="1",
                         PAYCAST_PROCESSING_DEADLINE_S="1", PAYCAST_RECONCILE_INTERVAL_S="0.2",
                         PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true", **env).start()


@pytest.fixture(scope="module")
def rzp_dsn(new_database):
    return new_database("paycast_rzp")


@pytest.fixture(scope="module")
def rzp_server(rzp_dsn, fake):
    proc = _server(rzp_dsn, fake)
    try:
        yield proc
    finally:
        stop_all([proc])


class Merchant:
    """A Paycast merchant with its Razorpay account added, and a client for it."""

    def __init__(self, server: ServerProcess, fake: FakeRazorpay) -> None:
        self.fake = fake
        self.razorpay = fake.add_account()
        self.client = server.client(server.create_merchant())
        secret = secrets.token_urlsafe(24)
        r = self.client.post("/v1/connector_accounts", json={
            "connector": "razorpay", "label": "Razorpay test", "webhook_secret": secret,
            "credentials": {"key_id": self.razorpay.key_id, "key_secret": self.razorpay.key_secret}})
        expect(r, 201)
        self.account = r.json()
        self.razorpay.webhook_url = server.url + self.account["webhook_path"]
        self.razorpay.webhook_secret = secret

    def confirm(self, capture_method: str = "automatic", method: str = "upi", amount: int = AMOUNT) -> dict:
        """A Razorpay payment created and confirmed: ``requires_action`` on a new order."""
        r = self.client.post("/v1/payments", json={
            "amount": amount, "currency": "INR", "payment_method": {"type": method}, "connector": "razorpay",
            "capture_method": capture_method, "confirm": True})
        assert r.status_code in (200, 201), r.text
        payment = r.json()
        assert payment["status"] == "requires_action", payment
        return payment

    def get(self, payment_id: str) -> dict:
        return self.client.get(f"/v1/payments/{payment_id}").json()

    def wait_status(self, payment_id: str, status: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (p := self.get(payment_id))["status"] == status and p, timeout)

    def refunds(self, payment_id: str) -> list[dict]:
        return self.client.get("/v1/refunds", params={"payment_id": payment_id}).json()["data"]

    def paid(self, capture_method: str = "automatic", method: str = "upi") -> tuple[dict, str]:
        """A payment paid in Checkout and settled by webhook: (payment, order id)."""
        payment = self.confirm(capture_method, method)
        order_id = order_of(payment)
        self.fake.pay(order_id, method=method)
        return self.wait_status(payment["id"], "succeeded" if capture_method == "automatic"
                                else "requires_capture"), order_id


def order_of(payment: dict) -> str:
    return payment["next_action"]["connector_sdk"]["data"]["order_id"]


@pytest.fixture
def merchant(rzp_server, fake):
    m = Merchant(rzp_server, fake)
    try:
        yield m
    finally:
        m.client.close()


def test_account_credentials_are_tried_and_masked(merchant, rzp_server, fake):
    account = merchant.account
    assert account["connector"] == "razorpay"
    assert account["status"] == "active"
    assert account["livemode"] is False
    assert merchant.razorpay.key_secret not in str(account)
    assert account["webhook_path"] == f"/webhooks/razorpay/{account['id']}"
    with rzp_server.client(rzp_server.create_merchant()) as other:
        r = other.post("/v1/connector_accounts", json={
            "connector": "razorpay", "webhook_secret": "x" * 24,
            "credentials": {"key_id": merchant.razorpay.key_id, "key_secret": "wrong"}})
    expect(r, 400)
    assert r.json()["error"]["code"] == "connector_credentials_invalid"


def test_order_checkout_webhook_succeeded(merchant, fake):
    payment = merchant.confirm()
    data = payment["next_action"]["connector_sdk"]
    assert data["connector"] == "razorpay"
    assert data["data"] == {"key_id": merchant.razorpay.key_id, "order_id": data["data"]["order_id"],
                            "amount": AMOUNT, "currency": "INR"}
    order = fake.orders[order_of(payment)]
    assert (order["receipt"], order["amount"], order["notes"]["payment_id"]) == (payment["id"], AMOUNT, payment["id"])
    fake.pay(order_of(payment))
    done = merchant.wait_status(payment["id"], "succeeded")
    assert (done["amount_received"], done["next_action"], done["connector"]) == (AMOUNT, None, "razorpay")
    assert done["attempts"][-1]["connector_txn_id"] == order_of(payment)
    assert fake.orders[order_of(payment)]["status"] == "paid"


def test_routing_sends_a_checkout_method_to_razorpay(merchant, fake):
    r = merchant.client.put("/v1/routing", json={"strategy": "priority", "connectors": ["mockrazorpay", "razorpay"]})
    expect(r, 200)
    # No connector named: UPI without an address can only go to Razorpay's Checkout (the
    # simulators need a VPA), so the first connector of the list is passed over.
    r = merchant.client.post("/v1/payments", json={"amount": AMOUNT, "currency": "INR",
                                                   "payment_method": {"type": "upi"}, "confirm": True})
    assert r.status_code in (200, 201), r.text
    payment = r.json()
    assert (payment["status"], payment["connector"]) == ("requires_action", "razorpay")
    fake.pay(order_of(payment), method="upi")
    assert merchant.wait_status(payment["id"], "succeeded")["amount_received"] == AMOUNT
    # A simulator's test card still goes to the simulator.
    r = merchant.client.post("/v1/payments", json={"amount": 1000, "currency": "INR", "confirm": True,
                                                   "payment_method": {"type": "card", "card": {
                                                       "number": "4242424242424242"}}})
    assert (r.json()["status"], r.json()["connector"]) == ("succeeded", "mockrazorpay"), r.text


def test_card_payment_shows_brand_and_last4(merchant, fake):
    payment, _ = merchant.paid(method="card")
    # Razorpay tells the card in its webhooks (Checkout collected it), never a number.
    assert payment["payment_method"] == {"type": "card", "card": {"brand": "visa", "last4": "1111"}}


def test_failed_then_succeeded_on_one_order(merchant, fake):
    payment = merchant.confirm()
    order_id = order_of(payment)
    fake.pay(order_id, succeed=False, error_description="Payment processing failed due to error at bank")
    failed_once = wait_for(lambda: (p := merchant.get(payment["id"]))["last_error"] and p)
    assert failed_once["status"] == "requires_action"  # the customer may retry in the same Checkout
    # Razorpay's error_reason (more telling than its generic error_code) and description.
    assert failed_once["last_error"] == {"code": "payment_failed",
                                         "message": "Payment processing failed due to error at bank"}
    assert failed_once["attempts"][-1]["error_code"] == "payment_failed"
    fake.pay(order_id)
    done = merchant.wait_status(payment["id"], "succeeded")
    assert done["amount_received"] == AMOUNT
    assert [o for o in fake.orders.values() if o["receipt"] == payment["id"]] == [fake.orders[order_id]]


def test_an_order_create_without_answer_is_found_by_reconciliation_not_created_again(merchant, fake):
    fake.fault("POST", ORDERS, "timeout_after")
    r = merchant.client.post("/v1/payments", json={"amount": AMOUNT, "currency": "INR", "connector": "razorpay",
                                                   "payment_method": {"type": "upi"}, "confirm": True})
    assert r.status_code in (200, 201), r.text
    payment = r.json()
    assert payment["status"] == "processing"
    assert payment["attempts"][-1]["status"] == "unknown"
    found = merchant.wait_status(payment["id"], "requires_action", timeout=30)
    orders = [o for o in fake.orders.values() if o["receipt"] == payment["id"]]
    assert [o["id"] for o in orders] == [order_of(found)]
    fake.pay(order_of(found))
    assert merchant.wait_status(payment["id"], "succeeded")["amount_received"] == AMOUNT
    assert len([o for o in fake.orders.values() if o["receipt"] == payment["id"]]) == 1


def test_manual_capture_is_whole_and_a_partial_one_sends_nothing(merchant, fake):
    payment, order_id = merchant.paid("manual", "card")
    assert payment["amount_capturable"] == AMOUNT
    captures = fake.count("POST", CAPTURE)
    r = merchant.client.post(f"/v1/payments/{payment['id']}/capture", json={"amount": AMOUNT - 100})
    expect(r, 400)
    assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("invalid_request_error",
                                                                      "partial_capture_unsupported")
    assert fake.count("POST", CAPTURE) == captures
    r = merchant.client.post(f"/v1/payments/{payment['id']}/capture", json={"amount": AMOUNT})
    expect(r, 200)
    assert r.json()["status"] == "succeeded", r.text
    assert fake.count("POST", CAPTURE) == captures + 1
    paid = next(p for p in fake.payments.values() if p["order_id"] == order_id)
    assert (paid["status"], paid["captured"]) == ("captured", True)


def test_cancel_from_requires_action_and_from_requires_capture(merchant, fake):
    waiting = merchant.confirm()
    before = len(fake.requests)
    r = merchant.client.post(f"/v1/payments/{waiting['id']}/cancel")
    expect(r, 200)
    assert r.json()["status"] == "canceled", r.text
    # Razorpay has no void: nothing mutating was sent (a read to check the order is allowed).
    assert all(method == "GET" for method, _, _ in fake.requests[before:])
    held, order_id = merchant.paid("manual")
    r = merchant.client.post(f"/v1/payments/{held['id']}/cancel")
    expect(r, 200)
    assert r.json()["status"] == "canceled", r.text
    assert next(p for p in fake.payments.values() if p["order_id"] == order_id)["status"] == "authorized"


def test_full_and_partial_refunds(merchant, fake):
    payment, order_id = merchant.paid()
    first = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 10000}).json()
    second = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"]}).json()
    for refund in (first, second):
        wait_for(lambda: merchant.client.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded")
    at_razorpay = {r["receipt"]: r for r in fake.refunds.values()
                   if fake.payments[r["payment_id"]]["order_id"] == order_id}
    assert {k: v["amount"] for k, v in at_razorpay.items()} == {first["id"]: 10000, second["id"]: AMOUNT - 10000}
    assert merchant.get(payment["id"])["amount_refunded"] == AMOUNT


def test_a_refund_whose_create_timed_out_is_found_by_reconciliation_never_created_twice(merchant, fake):
    payment, order_id = merchant.paid()
    fake.deliver_webhooks = False  # only reconciliation can learn the outcome
    try:
        fake.fault("POST", REFUND, "timeout_after")
        r = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 20000})
        expect(r, 201)
        refund = r.json()
        assert refund["status"] == "pending"
        wait_for(lambda: merchant.client.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded",
                 timeout=30)
    finally:
        fake.deliver_webhooks = True
    made = [r for r in fake.refunds.values() if fake.payments[r["payment_id"]]["order_id"] == order_id]
    assert [r["receipt"] for r in made] == [refund["id"]]


def test_disputes_created_won_and_lost(merchant, fake, rzp_server):
    def opened(payment_id: str) -> dict:
        return wait_for(lambda: merchant.client.get("/v1/disputes", params={"payment_id": payment_id}).json()["data"])[0]

    won_payment, won_order = merchant.paid("automatic", "card")
    at_razorpay = fake.open_dispute(won_order, 20000)
    dispute = opened(won_payment["id"])
    assert (dispute["status"], dispute["amount"]) == ("needs_response", 20000)
    r = merchant.client.post(f"/v1/disputes/{dispute['id']}/evidence", json={"text": "Delivered; signed receipt."})
    expect(r, 200)
    assert fake.disputes[at_razorpay["id"]]["evidence"]["summary"] == "Delivered; signed receipt."
    fake.close_dispute(at_razorpay["id"], "won")
    wait_for(lambda: merchant.client.get(f"/v1/disputes/{dispute['id']}").json()["status"] == "won")

    lost_payment, lost_order = merchant.paid()
    lost_at_razorpay = fake.open_dispute(lost_order)
    lost = opened(lost_payment["id"])
    fake.close_dispute(lost_at_razorpay["id"], "lost")
    wait_for(lambda: merchant.client.get(f"/v1/disputes/{lost['id']}").json()["status"] == "lost")


def test_duplicate_webhooks_apply_once_and_another_accounts_path_moves_nothing(merchant, fake, rzp_server):
    payment, order_id = merchant.paid()
    events = merchant.client.get("/v1/events", params={"object_id": payment["id"]}).json()["data"]
    for delivery in [d for d in fake.deliveries if d.key_id == merchant.razorpay.key_id]:
        assert fake.redeliver(delivery.event_id) == 200
    assert merchant.client.get("/v1/events", params={"object_id": payment["id"]}).json()["data"] == events
    # Merchant B's path, B's secret, A's order: stored, but A's payment does not move.
    other = Merchant(rzp_server, fake)
    try:
        waiting = merchant.confirm()
        mine = (merchant.razorpay.webhook_url, merchant.razorpay.webhook_secret)
        merchant.razorpay.webhook_url = other.razorpay.webhook_url
        merchant.razorpay.webhook_secret = other.razorpay.webhook_secret
        sent = len(fake.deliveries)
        try:
            fake.pay(order_of(waiting))
        finally:
            merchant.razorpay.webhook_url, merchant.razorpay.webhook_secret = mine
        strays = {d.event_id for d in fake.deliveries[sent:]}
        assert strays
        assert all(d.status == 200 for d in fake.deliveries[sent:])
        with rzp_server.client(ADMIN_TOKEN) as admin:
            wait_for(lambda: all(i["status"] != "pending" for i in admin.get(
                "/admin/inbox", params={"connector": "razorpay", "limit": 100}).json()["data"]
                if i["event_id"] in strays))
        assert merchant.get(waiting["id"])["status"] == "requires_action"
    finally:
        other.client.close()


def test_a_bad_signature_is_refused_and_secrets_never_reach_logs_or_reads(merchant, fake, rzp_server):
    payment, order_id = merchant.paid(method="card")
    refund = merchant.client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 10000}).json()
    wait_for(lambda: merchant.client.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded")
    delivered = next(d for d in fake.deliveries if d.key_id == merchant.razorpay.key_id)
    path = merchant.account["webhook_path"]
    with rzp_server.client() as anonymous:
        forged = anonymous.post(path, content=delivered.raw, headers={
            "X-Razorpay-Signature": "0" * 64, "x-razorpay-event-id": "forged1", "Content-Type": "application/json"})
    expect(forged, 400)
    account = merchant.client.get(f"/v1/connector_accounts/{merchant.account['id']}").json()
    assert account["credentials"]["key_id"] == merchant.razorpay.key_id[:9] + "…" + merchant.razorpay.key_id[-4:]
    secrets_ = (merchant.razorpay.key_secret, merchant.razorpay.webhook_secret)
    reads = [account, merchant.client.get("/v1/connector_accounts").json(), merchant.get(payment["id"]),
             merchant.client.get("/v1/events", params={"limit": 100}).json()]
    for secret in secrets_:
        assert all(secret not in str(read) for read in reads)
        assert all(secret not in line for line in rzp_server.stderr_lines + rzp_server.stdout_lines)


def test_two_processes_confirming_one_payment_create_one_order(rzp_dsn, rzp_server, fake, merchant):
    # Razorpay has no idempotency key: only our claim on the payment keeps the second order away.
    other = _server(rzp_dsn, fake)
    try:
        r = merchant.client.post("/v1/payments", json={"amount": AMOUNT, "currency": "INR", "connector": "razorpay",
                                                       "payment_method": {"type": "upi"}})
        assert r.status_code in (200, 201), r.text
        payment_id = r.json()["id"]
        barrier = threading.Barrier(2)

        def confirm(server: ServerProcess) -> int:
            with server.client(merchant.client.headers["Authorization"].split()[1]) as c:
                barrier.wait(timeout=30)
                return c.post(f"/v1/payments/{payment_id}/confirm", json={}).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(confirm, [rzp_server, other]))
        assert 200 in codes, codes
        waiting = merchant.wait_status(payment_id, "requires_action")
        orders = [o for o in fake.orders.values() if o["receipt"] == payment_id]
        assert [o["id"] for o in orders] == [order_of(waiting)]
        fake.pay(order_of(waiting))
        merchant.wait_status(payment_id, "succeeded")
        assert db_fetch(rzp_dsn, "SELECT count(*) AS n FROM payment_attempts WHERE payment_id = $1",
                        payment_id)[0]["n"] == 1
        assert run_check(rzp_dsn).returncode == 0
    finally:
        stop_all([other])


@pytest.mark.timeout(90)
def test_an_abandoned_order_is_canceled_after_the_deadline(new_database, fake):
    proc = _server(new_database("paycast_rzp_abandon"), fake, PAYCAST_ACTION_DEADLINE_S="1")
    try:
        m = Merchant(proc, fake)
        payment = m.confirm()
        done = m.wait_status(payment["id"], "canceled", timeout=30)
        assert (done["cancellation_reason"], done["next_action"]) == ("abandoned", None)
        order_id = order_of(payment)
        # Asked at Razorpay first (the order's payments), and nothing to void there.
        assert fake.count("GET", rf"/v1/orders/{order_id}/payments") >= 1
        assert [p for p in fake.requests if p[0] != "GET" and order_id in p[1]] == []
        m.client.close()
    finally:
        stop_all([proc])
