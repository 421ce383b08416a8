"""domain.stripe_events: every Stripe event type docs/api.md v1.2 applies, on Stripe's
documented event shapes (localstripe sends only ``payment_intent.succeeded`` and
``payment_intent.payment_failed``; the others are covered here), and the verifier
checked against the official SDK's ``stripe.WebhookSignature.verify_header``."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import stripe_events
from domain.errors import InvalidRequest
from domain.signatures import SignatureError, StaleSignature, stripe_header

PI = "pi_3MtwBwLkdIwHu7ix28a3tqPa"


def body(etype: str, obj: dict, event_id: str = "evt_1NG8Du2eZvKYlo2CUI79vXWy") -> bytes:
    """An event as Stripe sends it (API reference, "The Event object")."""
    return json.dumps({"id": event_id, "object": "event", "api_version": "2026-10-28.endive", "created": 1686089970,
                       "livemode": False, "pending_webhooks": 1, "type": etype,
                       "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}).encode()


def intent(status: str, **fields) -> dict:
    return {"id": PI, "object": "payment_intent", "amount": 2000, "amount_capturable": 0, "currency": "usd",
            "status": status, "payment_method": "pm_1", "latest_charge": "ch_1", "last_payment_error": None,
            "metadata": {"payment_id": "pay_1", "attempt_id": "att_1", "merchant_id": "mer_1"}, **fields}


def refund(status: str, **fields) -> dict:
    return {"id": "re_3MtwBwLkdIwHu7ix0vQbcJ1L", "object": "refund", "amount": 500, "charge": "ch_1",
            "currency": "usd", "payment_intent": PI, "reason": None, "status": status,
            "metadata": {"refund_id": "re_01JOURS", "payment_id": "pay_1"}, **fields}


def dispute(status: str) -> dict:
    return {"id": "du_1MtwBwLkdIwHu7ix", "object": "dispute", "amount": 2000, "charge": "ch_1", "currency": "usd",
            "payment_intent": PI, "reason": "fraudulent", "status": status, "metadata": {}}


@pytest.mark.parametrize(("etype", "obj", "kind"), [
    ("payment_intent.succeeded", intent("succeeded"), "payment.succeeded"),
    ("payment_intent.amount_capturable_updated", intent("requires_capture", amount_capturable=2000),
     "payment.authorized"),
    ("payment_intent.requires_action", intent("requires_action"), "payment.requires_action"),
    ("payment_intent.canceled", intent("canceled", cancellation_reason="abandoned"), "payment.canceled"),
])
def test_payment_intent_events(etype, obj, kind):
    event = stripe_events.parse(body(etype, obj), {}, account_id="mca_1")
    assert (event.kind, event.connector_txn_id, event.payment_txn_id, event.payment_id) == (kind, PI, PI, "pay_1")
    assert (event.amount, event.currency, event.status, event.event_type) == (2000, "USD", obj["status"], etype)
    assert (event.connector, event.account_id, event.created) == ("stripe", "mca_1", 1686089970)
    assert event.event_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"


def test_payment_failed_carries_the_decline():
    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
             "message": "Your card has insufficient funds."}
    event = stripe_events.parse(body("payment_intent.payment_failed",
                                     intent("requires_payment_method", last_payment_error=error)))
    assert (event.kind, event.error_code, event.message) == ("payment.failed", "insufficient_funds",
                                                             "Your card has insufficient funds.")


def test_canceled_says_why():
    event = stripe_events.parse(body("payment_intent.canceled", intent("canceled", cancellation_reason="abandoned")))
    assert event.message == "abandoned"


def test_card_details_when_the_event_carries_them():
    pm = {"id": "pm_1", "card": {"brand": "visa", "last4": "3155"}}
    event = stripe_events.parse(body("payment_intent.succeeded", intent("succeeded", payment_method=pm)))
    assert event.method_details == {"brand": "visa", "last4": "3155"}
    assert stripe_events.parse(body("payment_intent.succeeded", intent("succeeded"))).method_details is None


@pytest.mark.parametrize("etype", ["refund.updated", "charge.refund.updated"])
@pytest.mark.parametrize(("status", "kind"), [("succeeded", "refund.succeeded"), ("failed", "refund.failed"),
                                              ("canceled", "refund.failed"), ("pending", "ignored"),
                                              ("requires_action", "ignored")])
def test_refund_events(etype, status, kind):
    fields = {"failure_reason": "lost_or_stolen_card"} if status == "failed" else {}
    event = stripe_events.parse(body(etype, refund(status, **fields)))
    assert (event.kind, event.connector_txn_id, event.object_id, event.payment_txn_id) == (
        kind, "re_3MtwBwLkdIwHu7ix0vQbcJ1L", "re_01JOURS", PI)
    assert (event.amount, event.currency, event.payment_id) == (500, "USD", "pay_1")
    assert event.error_code == fields.get("failure_reason")


def test_charge_refunded_with_its_refunds_is_the_newest_refund():
    older = refund("succeeded", id="re_old", created=100, metadata={"refund_id": "re_01OLD"})
    newer = refund("succeeded", id="re_new", created=200)
    charge = {"id": "ch_1", "object": "charge", "amount": 2000, "amount_refunded": 1000, "currency": "usd",
              "payment_intent": PI, "refunded": False, "status": "succeeded", "metadata": {},
              "refunds": {"object": "list", "data": [older, newer], "has_more": False}}
    event = stripe_events.parse(body("charge.refunded", charge))
    assert (event.kind, event.connector_txn_id, event.object_id, event.payment_txn_id, event.amount) == (
        "refund.succeeded", "re_new", "re_01JOURS", PI, 500)


def test_charge_refunded_without_refunds_is_ignored():
    charge = {"id": "ch_1", "object": "charge", "amount": 2000, "amount_refunded": 2000, "currency": "usd",
              "payment_intent": PI, "refunded": True, "status": "succeeded", "metadata": {}}
    event = stripe_events.parse(body("charge.refunded", charge))
    assert (event.kind, event.connector_txn_id, event.payment_txn_id) == ("ignored", "ch_1", PI)


@pytest.mark.parametrize(("etype", "status", "kind"), [
    ("charge.dispute.created", "warning_needs_response", "dispute.opened"),
    ("charge.dispute.created", "needs_response", "dispute.opened"),
    ("charge.dispute.closed", "won", "dispute.won"),
    ("charge.dispute.closed", "lost", "dispute.lost"),
    ("charge.dispute.closed", "warning_closed", "ignored"),
])
def test_dispute_events(etype, status, kind):
    event = stripe_events.parse(body(etype, dispute(status)))
    assert (event.kind, event.connector_txn_id, event.payment_txn_id, event.status) == (
        kind, "du_1MtwBwLkdIwHu7ix", PI, status)
    assert (event.amount, event.currency, event.payment_id) == (2000, "USD", None)


@pytest.mark.parametrize("etype", ["customer.created", "charge.succeeded", "payment_intent.created",
                                   "payout.paid", "charge.dispute.updated"])
def test_other_types_are_ignored(etype):
    event = stripe_events.parse(body(etype, {"id": "obj_1", "object": "x"}))
    assert (event.kind, event.connector_txn_id, event.event_type) == ("ignored", "obj_1", etype)


def test_expanded_payment_intent_fields_are_read_as_ids():
    obj = dispute("won") | {"payment_intent": {"id": PI, "object": "payment_intent"}}
    assert stripe_events.parse(body("charge.dispute.closed", obj)).payment_txn_id == PI


@pytest.mark.parametrize(("raw", "param"), [
    (b"not json", None), (b"[]", None), (b'{"id": "evt_1"}', "type"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "created": "x",
                 "data": {"object": {}}}).encode(), "created"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "created": 1, "data": []}).encode(),
     "data.object"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "created": 1,
                 "data": {"object": {"status": "succeeded"}}}).encode(), "data.object.id"),
    (b'{"id": "evt_\\u0000"}', None),
])
def test_bad_bodies_are_typed_errors(raw, param):
    with pytest.raises(InvalidRequest) as refused:
        stripe_events.parse(raw)
    assert refused.value.param == param


def test_every_applied_type_of_the_contract_is_mapped():
    contract = {"payment_intent.succeeded", "payment_intent.amount_capturable_updated",
                "payment_intent.payment_failed", "payment_intent.canceled", "payment_intent.requires_action",
                "charge.refunded", "charge.refund.updated", "refund.updated", "charge.dispute.created",
                "charge.dispute.closed"}
    assert stripe_events.APPLIED_TYPES == contract


# -- signatures ------------------------------------------------------------------

def test_verify_reads_the_header():
    raw = body("payment_intent.succeeded", intent("succeeded"))
    now = int(time.time())
    stripe_events.verify("whsec_abc", raw, {"Stripe-Signature": stripe_header("whsec_abc", raw, now)}, now)
    with pytest.raises(SignatureError):
        stripe_events.verify("whsec_other", raw, {"Stripe-Signature": stripe_header("whsec_abc", raw, now)}, now)
    with pytest.raises(StaleSignature):
        stripe_events.verify("whsec_abc", raw, {"Stripe-Signature": stripe_header("whsec_abc", raw, now - 301)}, now)
    with pytest.raises(SignatureError):
        stripe_events.verify("whsec_abc", raw, {}, now)


def _ours(secret: str, raw: bytes, header: str, now: int) -> bool:
    try:
        stripe_events.verify(secret, raw, {"Stripe-Signature": header}, now)
        return True
    except SignatureError:
        return False


def _sdk(secret: str, raw: bytes, header: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(raw, header, secret, tolerance=300)
        return True
    except stripe.SignatureVerificationError:
        return False


# Secrets as Stripe issues them (whsec_ + base62) and arbitrary non-blank text.
secrets_ = st.one_of(st.from_regex(r"whsec_[A-Za-z0-9]{24,40}", fullmatch=True),
                     st.text(min_size=1, max_size=40).filter(lambda s: s.strip(" \t\r\n\f\v")))
bodies = st.one_of(st.text(max_size=200).map(str.encode),
                   st.dictionaries(st.text(max_size=8), st.integers(), max_size=4).map(lambda d: json.dumps(d).encode()))
# Seconds before now; 298..302 left out so the SDK's own clock (time.time()) never
# straddles the boundary between its call and ours.
ages = st.one_of(st.integers(0, 297), st.integers(303, 10 ** 6))


@settings(max_examples=300, deadline=None)
@given(secret=secrets_, other_secret=secrets_, raw=bodies, other_raw=bodies, age=ages,
       variant=st.sampled_from(["right", "wrong_secret", "wrong_body", "extra_signatures", "v0_only", "no_t"]))
def test_sdk_accepts_exactly_what_we_accept(secret, other_secret, raw, other_raw, age, variant):
    now = int(time.time())
    t = now - age
    header = stripe_header(secret, raw, t)
    if variant == "wrong_secret":
        header = stripe_header(other_secret, raw, t)
    elif variant == "wrong_body":
        header = stripe_header(secret, other_raw, t)
    elif variant == "extra_signatures":  # key rotation: one v1 per secret, any may match
        header = f"{stripe_header(other_secret, raw, t)},{header.split(',')[1]},v0=deadbeef"
    elif variant == "v0_only":
        header = header.replace("v1=", "v0=")
    elif variant == "no_t":
        header = header.split(",", 1)[1]
    assert _ours(secret, raw, header, now) == _sdk(secret, raw, header)


def test_future_timestamps_are_where_we_are_stricter():
    # The SDK only refuses old signatures; ours refuses more than 300 s ahead too (a
    # clock that far ahead is not Stripe's). Within the window both accept.
    raw, now = b"{}", int(time.time())
    ahead = stripe_header("whsec_abc", raw, now + 3600)
    assert _sdk("whsec_abc", raw, ahead)
    assert not _ours("whsec_abc", raw, ahead, now)
    near = stripe_header("whsec_abc", raw, now + 100)
    assert _sdk("whsec_abc", raw, near)
    assert _ours("whsec_abc", raw, near, now)


@pytest.mark.parametrize("t", ["²", "٣", "12a", "", "-5"])
def test_odd_timestamps_are_signature_errors(t):
    # Unicode digits pass str.isdigit() but not int(): they must still be a typed refusal, never a 500.
    with pytest.raises(SignatureError):
        stripe_events.verify("whsec_abc", b"{}", {"Stripe-Signature": f"t={t},v1=00"}, 0)
