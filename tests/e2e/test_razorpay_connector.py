"""gateways.razorpay.RazorpayConnector against the fake Razorpay server over real HTTP.

The flows through a Paycast server are in test_razorpay.py; these pin the
connector's own promises: what each call sends, what it answers, and that a
call that ended without an answer is never blindly repeated (Razorpay has no
idempotency keys).
"""

from __future__ import annotations

import pytest

from domain.payments import OutcomeKind
from gateways.base import (AuthorizeRequest, ConnectorRefused, ConnectorServerError, ConnectorTimeout,
                           ConnectorUnavailable, CredentialsInvalid, RefundRequest, nothing_charged)
from gateways.razorpay import RazorpayConnector, RazorpayUnreachable
from tests.fakes.fake_razorpay import FakeRazorpay

ORDERS = r"/v1/orders"
REFUND = r"/v1/payments/\w+/refund"
CAPTURE = r"/v1/payments/\w+/capture"


@pytest.fixture
def fake():
    with FakeRazorpay(hang_s=5) as server:
        yield server


@pytest.fixture
async def connector(fake):
    account = fake.add_account()
    conn = RazorpayConnector({"key_id": account.key_id, "key_secret": account.key_secret}, api_base=fake.url,
                             account_id="mca_test", timeout_s=1.0)
    yield conn
    await conn.aclose()


def _request(capture_method="automatic", payment_id="pay_01TEST", attempt_id="att_01TEST", amount=50000,
             currency="INR") -> AuthorizeRequest:
    return AuthorizeRequest(payment_id=payment_id, attempt_id=attempt_id, merchant_id="mer_01TEST", amount=amount,
                            currency=currency, capture_method=capture_method, payment_method={"type": "upi"})


def _refund(order_id: str, refund_id="re_01TEST", amount=50000) -> RefundRequest:
    return RefundRequest(refund_id=refund_id, payment_id="pay_01TEST", merchant_id="mer_01TEST",
                         connector_txn_id=order_id, amount=amount, currency="INR")


async def test_credentials_are_tried_with_one_read(fake, connector):
    assert await connector.verify_credentials() is False  # rzp_test_…: not live
    assert fake.count("GET", ORDERS) == 1
    wrong = RazorpayConnector({"key_id": connector.key_id, "key_secret": "nope"}, api_base=fake.url, timeout_s=1)
    with pytest.raises(CredentialsInvalid) as caught:
        await wrong.verify_credentials()
    assert "nope" not in str(caught.value)
    await wrong.aclose()
    fake.fault("GET", ORDERS, "server_error")
    with pytest.raises(ConnectorUnavailable):  # the API answers 503 connector_unavailable
        await connector.verify_credentials()


async def test_authorize_creates_an_order_and_answers_checkouts_parameters(fake, connector):
    outcome = await connector.authorize(_request("manual"))
    assert outcome.kind is OutcomeKind.REQUIRES_ACTION
    assert outcome.connector_txn_id.startswith("order_")
    assert outcome.next_action == {"type": "connector_sdk", "connector_sdk": {"connector": "razorpay", "data": {
        "key_id": connector.key_id, "order_id": outcome.connector_txn_id, "amount": 50000, "currency": "INR"}}}
    method, path, body = fake.requests[-1]
    assert (method, path) == ("POST", "/v1/orders")
    assert body == {"amount": 50000, "currency": "INR", "receipt": "pay_01TEST", "payment_capture": False,
                    "notes": {"payment_id": "pay_01TEST", "attempt_id": "att_01TEST", "merchant_id": "mer_01TEST",
                              "capture_method": "manual"}}


async def test_retrieve_follows_the_orders_payments(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    waiting = await connector.retrieve(order_id, "pay_01TEST", request=_request())
    assert (waiting.kind, waiting.next_action["connector_sdk"]["data"]["order_id"]) == (
        OutcomeKind.REQUIRES_ACTION, order_id)
    fake.pay(order_id, succeed=False)
    failed_once = await connector.retrieve(order_id, "pay_01TEST")  # without request: the order is read
    assert (failed_once.kind, failed_once.error_code) == (OutcomeKind.REQUIRES_ACTION, "payment_failed")
    fake.pay(order_id)
    done = await connector.retrieve(order_id, "pay_01TEST")
    assert (done.kind, done.connector_txn_id) == (OutcomeKind.SUCCEEDED, order_id)
    # Lists show only card_id: brand and last 4 are read with expand[]=card.
    assert done.method_details == {"brand": "visa", "last4": "1111"}
    assert fake.requests[-1][1].startswith("/v1/payments/pay_")


async def test_an_unanswered_create_is_found_by_receipt_never_created_again(fake, connector):
    fake.fault("POST", ORDERS, "timeout_after")
    with pytest.raises(ConnectorTimeout) as caught:
        await connector.authorize(_request())
    assert not nothing_charged(connector, caught.value)
    found = await connector.retrieve(None, "pay_01TEST", request=_request())
    assert found.kind is OutcomeKind.REQUIRES_ACTION
    assert found.connector_txn_id in fake.orders
    # Another attempt of the same payment made no order: nothing to find, nothing created.
    other = await connector.retrieve(None, "pay_01TEST", request=_request(attempt_id="att_02TEST"))
    assert (other.kind, other.error_code) == (OutcomeKind.DECLINED, "order_not_found")
    assert fake.count("POST", ORDERS) == 1
    assert len(fake.orders) == 1


async def test_manual_capture_is_whole_and_never_sent_twice(fake, connector):
    order_id = (await connector.authorize(_request("manual"))).connector_txn_id
    fake.pay(order_id)
    assert (await connector.retrieve(order_id, "pay_01TEST", request=_request("manual"))).kind is OutcomeKind.AUTHORIZED
    with pytest.raises(ConnectorRefused) as caught:
        await connector.capture(order_id, 20000)
    assert caught.value.code == "partial_capture_unsupported"
    assert fake.count("POST", CAPTURE) == 0
    fake.fault("POST", CAPTURE, "timeout_after")
    with pytest.raises(ConnectorTimeout):
        await connector.capture(order_id, 50000)
    await connector.capture(order_id, 50000)  # the retry reads the payment: captured already
    assert fake.count("POST", CAPTURE) == 1
    assert (await connector.retrieve(order_id, "pay_01TEST")).kind is OutcomeKind.SUCCEEDED


async def test_automatic_capture_in_flight_is_pending_not_authorized(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    payment = fake.pay(order_id)
    fake.payments[payment["id"]].update(status="authorized", captured=False)  # Razorpay has not captured yet
    assert (await connector.retrieve(order_id, "pay_01TEST", request=_request())).kind is OutcomeKind.PENDING


async def test_void_sends_nothing(fake, connector):
    order_id = (await connector.authorize(_request("manual"))).connector_txn_id
    before = len(fake.requests)
    await connector.void(order_id, idempotency_key="att_01TEST:cancel")
    assert len(fake.requests) == before


async def test_refunds_full_and_partial_each_created_once(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    fake.pay(order_id)
    part = await connector.refund(_refund(order_id, "re_01PART", 20000))
    assert part.status == "succeeded"
    assert part.reference.startswith("rfnd_")
    again = await connector.refund(_refund(order_id, "re_01PART", 20000))  # a replay finds it
    assert again.reference == part.reference
    rest = await connector.refund(_refund(order_id, "re_01REST", 30000))
    assert rest.status == "succeeded"
    assert fake.count("POST", REFUND) == 2
    sent = [body for method, path, body in fake.requests if method == "POST" and path.endswith("/refund")]
    assert sent[0] == {"amount": 20000, "speed": "normal", "receipt": "re_01PART",
                       "notes": {"refund_id": "re_01PART", "payment_id": "pay_01TEST", "razorpay_order_id": order_id}}
    with pytest.raises(ConnectorRefused):
        await connector.refund(_refund(order_id, "re_01MORE", 100))


async def test_a_refund_whose_create_timed_out_is_found_by_its_receipt(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    fake.pay(order_id)
    fake.fault("POST", REFUND, "timeout_after")
    with pytest.raises(ConnectorTimeout):
        await connector.refund(_refund(order_id))
    found = await connector.retrieve_refund(_refund(order_id), None)
    assert found.status == "succeeded"
    assert found.reference in fake.refunds
    never = await connector.retrieve_refund(_refund(order_id, "re_01NEVER", 100), None)
    assert (never.status, never.error_code) == ("failed", "refund_not_found")
    assert fake.count("POST", REFUND) == 1


async def test_pending_refund_stays_pending_until_razorpay_decides(fake, connector):
    fake.refund_status = "pending"
    order_id = (await connector.authorize(_request())).connector_txn_id
    fake.pay(order_id)
    submitted = await connector.refund(_refund(order_id))
    assert submitted.status == "pending"
    fake.settle_refund(submitted.reference, "failed")
    assert (await connector.retrieve_refund(_refund(order_id), submitted.reference)).status == "failed"


async def test_disputes_contest_and_accept(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    fake.pay(order_id)
    first, second = fake.open_dispute(order_id, 10000), fake.open_dispute(order_id, 5000)
    await connector.submit_dispute_evidence(first["id"], "delivered, signed receipt", payment_id="pay_01TEST",
                                            dispute_id="dp_01", amount=10000, currency="INR")
    assert fake.disputes[first["id"]]["status"] == "under_review"
    assert fake.disputes[first["id"]]["evidence"]["summary"] == "delivered, signed receipt"
    await connector.accept_dispute(second["id"])
    assert fake.disputes[second["id"]]["status"] == "lost"


async def test_errors_are_typed_and_declared_only_when_nothing_happened(fake, connector):
    fake.fault("POST", ORDERS, "server_error")
    with pytest.raises(ConnectorServerError) as server_error:
        await connector.authorize(_request())
    with pytest.raises(ConnectorRefused) as refused:
        await connector.authorize(_request(amount=50))  # below Razorpay's minimum
    assert "at least" in str(refused.value)
    assert nothing_charged(connector, refused.value)
    assert not nothing_charged(connector, server_error.value)
    closed = RazorpayConnector({"key_id": "rzp_test_x", "key_secret": "y"}, api_base="http://127.0.0.1:9",
                               timeout_s=1)
    with pytest.raises(RazorpayUnreachable) as unreachable:
        await closed.authorize(_request())
    assert nothing_charged(closed, unreachable.value)
    await closed.aclose()


async def test_another_accounts_order_is_unknown(fake, connector):
    order_id = (await connector.authorize(_request())).connector_txn_id
    other = fake.add_account()
    stranger = RazorpayConnector({"key_id": other.key_id, "key_secret": other.key_secret}, api_base=fake.url,
                                 timeout_s=1)
    with pytest.raises(ConnectorRefused):
        await stranger.retrieve(order_id, "pay_01TEST")
    await stranger.aclose()
