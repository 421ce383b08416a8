"""domain.razorpay_events: the signature scheme (cross-checked against Razorpay's
own SDK) and the mapping of Razorpay's documented webhook payloads."""

from __future__ import annotations

import json

import pytest
import razorpay
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import razorpay_events as rzp
from domain.errors import InvalidRequest
from domain.signatures import SignatureError, razorpay_header

_SDK = razorpay.Utility()


def _sdk_accepts(body: str, signature: str, secret: str) -> bool:
    """Razorpay's ``Utility.verify_webhook_signature`` (it wants a str body): True or it raised."""
    try:
        return _SDK.verify_webhook_signature(body, signature, secret) is True
    except (razorpay.errors.SignatureVerificationError, TypeError):
        # TypeError: hmac.compare_digest refuses a non-ASCII str signature, which is a "no".
        return False


def _ours_accepts(body: str, signature: str, secret: str) -> bool:
    try:
        rzp.verify(secret, body.encode(), {"X-Razorpay-Signature": signature}, 0)
    except SignatureError:
        return False
    return True


def _signature_variants(draw, body: str, secret: str) -> str:
    right = razorpay_header(secret, body.encode())
    return draw(st.sampled_from([
        right, right.upper(), right[:-1], right + "0", " " + right, right + "\n", "",
        razorpay_header(secret + "x", body.encode()), razorpay_header(secret, body.encode() + b" "),
    ]) | st.text(max_size=70))


@st.composite
def cases(draw) -> tuple[str, str, str]:
    body = draw(st.text(max_size=300))
    secret = draw(st.text(min_size=1, max_size=40))
    return body, _signature_variants(draw, body, secret), secret


@settings(max_examples=400, deadline=None)
@given(cases())
def test_our_verifier_accepts_exactly_what_razorpays_sdk_accepts(case):
    body, signature, secret = case
    assert _ours_accepts(body, signature, secret) == _sdk_accepts(body, signature, secret)


def test_the_right_signature_passes_and_a_missing_header_fails():
    raw = b'{"event":"payment.captured"}'
    rzp.verify("s3cret", raw, {"x-razorpay-signature": razorpay_header("s3cret", raw)})
    assert _SDK.verify_webhook_signature(raw.decode(), razorpay_header("s3cret", raw), "s3cret")
    with pytest.raises(SignatureError):
        rzp.verify("s3cret", raw, {})


# -- payloads, shaped as Razorpay's documentation shows them ----------------------------

def _payment(status="captured", order_id="order_KbCZFK4mhbWLoO", **extra) -> dict:
    payment = {"id": "pay_KbCaQOgY6QclC7", "entity": "payment", "amount": 50000, "currency": "INR",
               "status": status, "order_id": order_id, "method": "card", "amount_refunded": 0,
               "captured": status == "captured", "notes": [], "error_code": None, "error_description": None,
               "card": {"id": "card_1", "entity": "card", "last4": "1111", "network": "Visa", "type": "debit"},
               "created_at": 1_700_000_000}
    payment.update(extra)
    return payment


def _event(event: str, **entities) -> bytes:
    return json.dumps({"entity": "event", "account_id": "acc_BFQ7uQEaa7j2z7", "event": event,
                       "contains": list(entities), "created_at": 1_700_000_100,
                       "payload": {k: {"entity": v} for k, v in entities.items()}}).encode()


HEADERS = {"X-Razorpay-Event-Id": "KJm2Ly8xYc3k9Q"}


@pytest.mark.parametrize(("event", "status", "kind"), [
    ("payment.authorized", "authorized", "payment.authorized"),
    ("payment.captured", "captured", "payment.succeeded"),
    ("payment.failed", "failed", "payment.attempt_failed"),
])
def test_payment_events_are_keyed_on_the_order(event, status, kind):
    parsed = rzp.parse(_event(event, payment=_payment(status)), HEADERS)
    assert (parsed.connector, parsed.kind, parsed.event_type) == ("razorpay", kind, event)
    assert parsed.connector_txn_id == parsed.payment_txn_id == "order_KbCZFK4mhbWLoO"
    assert (parsed.event_id, parsed.amount, parsed.currency, parsed.status) == ("KJm2Ly8xYc3k9Q", 50000, "INR", status)
    assert parsed.created == 1_700_000_100
    assert parsed.method_details == {"brand": "visa", "last4": "1111"}


def test_a_failed_try_keeps_razorpays_error_code_and_description():
    raw = _event("payment.failed", payment=_payment("failed", error_code="BAD_REQUEST_ERROR",
                                                    error_reason="payment_failed",
                                                    error_description="Payment processing failed due to error at bank"))
    parsed = rzp.parse(raw, HEADERS)
    assert (parsed.kind, parsed.error_code) == ("payment.attempt_failed", "payment_failed")
    assert parsed.message == "Payment processing failed due to error at bank"
    without_reason = _event("payment.failed", payment=_payment("failed", error_code="GATEWAY_ERROR"))
    assert rzp.parse(without_reason, HEADERS).error_code == "GATEWAY_ERROR"


def test_order_paid_names_our_payment_from_the_order_receipt():
    order = {"id": "order_KbCZFK4mhbWLoO", "entity": "order", "amount": 50000, "amount_paid": 50000,
             "amount_due": 0, "currency": "INR", "receipt": "pay_01JF3K", "status": "paid",
             "notes": {"payment_id": "pay_01JF3K", "attempt_id": "att_01JF3K"}, "created_at": 1}
    parsed = rzp.parse(_event("order.paid", payment=_payment(), order=order), HEADERS)
    assert (parsed.kind, parsed.connector_txn_id, parsed.payment_id) == ("payment.succeeded",
                                                                       "order_KbCZFK4mhbWLoO", "pay_01JF3K")


def test_upi_payment_has_no_card_details():
    raw = _event("payment.captured", payment=_payment(method="upi", card=None, vpa="gaurav@okhdfc"))
    assert rzp.parse(raw, HEADERS).method_details is None


@pytest.mark.parametrize(("event", "status", "kind"), [
    ("refund.processed", "processed", "refund.succeeded"),
    ("refund.failed", "failed", "refund.failed"),
])
def test_refund_events_carry_our_refund_id_and_the_order(event, status, kind):
    refund = {"id": "rfnd_Heax5rxucwf2aS", "entity": "refund", "amount": 4000, "currency": "INR",
              "payment_id": "pay_KbCaQOgY6QclC7", "notes": {"refund_id": "re_01JF3K", "payment_id": "pay_01JF3K"},
              "receipt": "re_01JF3K", "status": status, "created_at": 1}
    parsed = rzp.parse(_event(event, refund=refund, payment=_payment("refunded")), HEADERS)
    assert (parsed.kind, parsed.connector_txn_id, parsed.object_id) == (kind, "rfnd_Heax5rxucwf2aS", "re_01JF3K")
    assert (parsed.payment_txn_id, parsed.amount, parsed.payment_id) == ("order_KbCZFK4mhbWLoO", 4000, "pay_01JF3K")


def test_a_refund_without_notes_is_still_ours_by_its_receipt():
    refund = {"id": "rfnd_X", "entity": "refund", "amount": 4000, "currency": "INR", "payment_id": "pay_1",
              "notes": [], "receipt": "re_01JF3K", "status": "processed"}
    assert rzp.parse(_event("refund.processed", refund=refund, payment=_payment()), HEADERS).object_id == "re_01JF3K"


@pytest.mark.parametrize(("event", "kind"), [
    ("payment.dispute.created", "dispute.opened"),
    ("payment.dispute.won", "dispute.won"),
    ("payment.dispute.lost", "dispute.lost"),
])
def test_dispute_events_carry_the_dispute_and_the_order(event, kind):
    dispute = {"id": "disp_AHfqOvkldwsbqt", "entity": "dispute", "payment_id": "pay_KbCaQOgY6QclC7",
               "amount": 10000, "currency": "INR", "amount_deducted": 0, "reason_code": "chargeback",
               "respond_by": 2, "status": kind.split(".")[1], "phase": "chargeback", "created_at": 1}
    parsed = rzp.parse(_event(event, payment=_payment(), dispute=dispute), HEADERS)
    assert (parsed.kind, parsed.connector_txn_id, parsed.payment_txn_id) == (kind, "disp_AHfqOvkldwsbqt",
                                                                           "order_KbCZFK4mhbWLoO")
    assert (parsed.amount, parsed.error_code) == (10000, "chargeback")


@pytest.mark.parametrize("event", ["payment.dispute.under_review", "refund.created", "settlement.processed",
                                   "subscription.charged"])
def test_other_types_are_ignored_not_refused(event):
    parsed = rzp.parse(_event(event, payment=_payment()), HEADERS)
    assert (parsed.kind, parsed.event_type) == ("ignored", event)


def test_event_id_comes_from_the_header_in_any_case_else_from_the_body():
    raw = _event("payment.captured", payment=_payment())
    assert rzp.parse(raw, {"x-razorpay-event-id": "abc"}).event_id == "abc"
    first, again = rzp.parse(raw, {}), rzp.parse(raw, {})
    assert first.event_id == again.event_id
    assert first.event_id.startswith("sha256:")


@pytest.mark.parametrize(("raw", "param"), [
    (b"not json", None),
    (b"[1]", None),
    (b'{"payload": {}}', "event"),
    (_event("payment.captured", payment={"id": "pay_1"}), "payload.payment.entity.order_id"),
    (_event("refund.processed", refund={"amount": 1}), "payload.refund.entity.id"),
    (_event("payment.dispute.won", dispute={}), "payload.dispute.entity.id"),
])
def test_malformed_bodies_are_typed_errors(raw, param):
    with pytest.raises(InvalidRequest) as caught:
        rzp.parse(raw, HEADERS)
    assert caught.value.param == param


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "order_id", "amount", "currency", "status", "notes", "receipt", "card", "method",
                         "error_code", "payment_id", "entity", "x"]), children, max_size=5),
    max_leaves=12)
_bodies = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from([*rzp.KINDS, "settlement.processed"]) | st.integers() | st.none(),
    "created_at": st.integers() | st.text(max_size=5),
    "payload": st.dictionaries(st.sampled_from(["payment", "order", "refund", "dispute"]),
                               st.fixed_dictionaries({}, optional={"entity": _json}) | _json, max_size=4),
})


@settings(max_examples=300, deadline=None)
@given(_bodies, st.dictionaries(st.sampled_from(["x-razorpay-event-id", "X-Razorpay-Event-Id"]),
                                st.text(max_size=20)))
def test_any_body_is_an_event_or_a_typed_error(body, headers):
    try:
        event = rzp.parse(json.dumps(body).encode(), headers)
    except InvalidRequest:
        return
    assert event.connector == "razorpay"
    assert event.kind in set(rzp.KINDS.values()) | {"ignored"}
    assert isinstance(event.connector_txn_id, str)
    assert isinstance(event.event_id, str)
    assert event.event_id
