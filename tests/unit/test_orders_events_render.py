"""domain/orders.py, domain/events.py and domain/render.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from domain import render
from domain.events import EVENT_TYPES, NewEvent, order_event, payment_event
from domain.orders import ORDER_STATUSES, order_status_after_payment
from domain.payments import TERMINAL, Status

# ------------------------------------------------------------------------- orders

PAYMENT_STATUSES = [s.value for s in Status]

# (order status, payment status) → new order status, or None for "unchanged".
EXPECTED_ORDER = {
    ("created", "succeeded"): "paid",
    ("created", "failed"): "payment_failed",
    ("payment_failed", "succeeded"): "paid",   # a retry paid it
    ("payment_failed", "failed"): None,        # already failed: no second change
}


def test_order_statuses():
    assert ORDER_STATUSES == ("created", "paid", "payment_failed", "refunded")


@pytest.mark.parametrize("order_status", ORDER_STATUSES)
@pytest.mark.parametrize("payment_status", PAYMENT_STATUSES)
def test_order_status_after_payment_table(order_status, payment_status):
    expected = EXPECTED_ORDER.get((order_status, payment_status))
    got = order_status_after_payment(order_status, payment_status)
    assert got == expected
    if got is not None:
        assert got in ORDER_STATUSES
        assert got != order_status


@pytest.mark.parametrize("payment_status", PAYMENT_STATUSES)
def test_paid_and_refunded_orders_never_change_on_payments(payment_status):
    assert order_status_after_payment("paid", payment_status) is None
    assert order_status_after_payment("refunded", payment_status) is None


@pytest.mark.parametrize("payment_status", ["requires_confirmation", "processing", "requires_capture", "canceled"])
def test_non_final_or_canceled_payments_do_not_move_an_order(payment_status):
    for order_status in ("created", "payment_failed"):
        assert order_status_after_payment(order_status, payment_status) is None


def test_order_transitions_have_matching_event_types():
    for (order_status, payment_status) in EXPECTED_ORDER:
        new = order_status_after_payment(order_status, payment_status)
        if new is not None:
            assert f"order.{new}" in EVENT_TYPES


# ------------------------------------------------------------------------- events

API_EVENT_TYPES = {
    "payment.created", "payment.processing", "payment.succeeded", "payment.failed",
    "payment.requires_capture", "payment.canceled", "payment.review_required",
    "payment.requires_action",  # v1.2
    "order.paid", "order.payment_failed", "refund.succeeded", "refund.failed", "refund.review_required",
    "dispute.opened", "dispute.won", "dispute.lost", "dispute.accepted",
    "account.deposit.completed", "account.deposit.failed",
    "account.withdrawal.completed", "account.withdrawal.failed", "account.withdrawal.review_required",
}


def test_event_types_are_the_documented_ones():
    assert EVENT_TYPES == API_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_new_event_accepts_every_known_type(event_type):
    ev = NewEvent(event_type, "pay_1", {"id": "pay_1"})
    assert ev.type == event_type
    assert ev.object_id == "pay_1"
    assert ev.customer_id is None


@pytest.mark.parametrize(
    "event_type",
    ["", "payment", "payment.requires_confirmation", "Payment.created", "payment.created ", "payment.Created",
     "order.created", "refund.pending", "charge.succeeded", "payment.*"],
)
def test_new_event_rejects_unknown_type(event_type):
    with pytest.raises(ValueError, match="unknown event type"):
        NewEvent(event_type, "pay_1", {"id": "pay_1"})


def test_new_event_is_frozen():
    ev = NewEvent("payment.created", "pay_1", {"id": "pay_1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.type = "payment.succeeded"  # type: ignore[misc]


@pytest.mark.parametrize("status", ["created", "processing", "succeeded", "failed", "requires_capture",
                                    "canceled", "review_required"])
def test_payment_event(status):
    snapshot = {"id": "pay_abc", "status": status, "customer_id": "cus_42"}
    ev = payment_event(status, snapshot)
    assert ev == NewEvent(f"payment.{status}", "pay_abc", snapshot, "cus_42")
    assert ev.snapshot is snapshot


def test_payment_event_without_customer():
    ev = payment_event("succeeded", {"id": "pay_abc"})
    assert ev.customer_id is None
    assert ev.object_id == "pay_abc"


def test_every_status_a_payment_can_move_to_has_an_event():
    for status in Status:
        if status is Status.REQUIRES_CONFIRMATION:
            continue  # the creation event is payment.created
        assert payment_event(status.value, {"id": "pay_1"}).type == f"payment.{status.value}"
    assert all(f"payment.{s.value}" in EVENT_TYPES for s in TERMINAL)


def test_payment_event_for_a_status_without_an_event_raises():
    with pytest.raises(ValueError):
        payment_event("requires_confirmation", {"id": "pay_1"})


@pytest.mark.parametrize("status", ["paid", "payment_failed"])
def test_order_event(status):
    snapshot = {"id": "ord_1", "customer_id": "cus_9", "status": status}
    ev = order_event(status, snapshot)
    assert ev.type == f"order.{status}"
    assert ev.object_id == "ord_1"
    assert ev.customer_id == "cus_9"
    assert ev.snapshot is snapshot


def test_order_event_rejects_statuses_without_events():
    for status in ("created", "refunded"):
        with pytest.raises(ValueError):
            order_event(status, {"id": "ord_1"})


# ------------------------------------------------------------------------- render

ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def test_iso_format_utc():
    value = dt.datetime(2026, 11, 22, 4, 13, 48, 123456, tzinfo=UTC)
    assert render.iso(value) == "2026-11-22T04:13:48.123Z"
    assert ISO_RE.match(render.iso(value))


def test_iso_zero_pads_every_field():
    assert render.iso(dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == "2026-01-02T03:04:05.006Z"
    assert render.iso(dt.datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_iso_truncates_to_milliseconds():
    assert render.iso(dt.datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)) == "2026-01-01T00:00:00.999Z"


def test_iso_converts_to_utc():
    value = dt.datetime(2026, 11, 22, 9, 43, 48, 500000, tzinfo=IST)
    assert render.iso(value) == "2026-11-22T04:13:48.500Z"
    # Across a date boundary.
    assert render.iso(dt.datetime(2026, 1, 1, 2, 0, tzinfo=IST)) == "2025-12-31T20:30:00.000Z"


def test_iso_none():
    assert render.iso(None) is None


@settings(max_examples=200, deadline=None)
@given(
    value=st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_iso_property(value, offset_minutes):
    aware = value.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
    text = render.iso(aware)
    assert ISO_RE.match(text), text
    parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert dt.timedelta(0) <= aware - parsed < dt.timedelta(milliseconds=1)


T0 = dt.datetime(2026, 11, 22, 4, 13, 48, 123000, tzinfo=UTC)
T1 = dt.datetime(2026, 11, 22, 4, 13, 49, 456000, tzinfo=UTC)

API_PAYMENT_FIELDS = {
    "id", "object", "amount", "currency", "status", "capture_method", "amount_capturable", "amount_received",
    "amount_refunded", "order_id", "customer_id", "connector", "payment_method", "last_error",
    "review_required", "metadata", "attempts", "created_at", "updated_at",
    "next_action", "cancellation_reason",  # v1.2
}


def _payment_row(payment_method, **over):
    row = {
        "id": "pay_ABC", "amount": 2500, "currency": "INR", "status": "succeeded", "capture_method": "automatic",
        "amount_capturable": 0, "amount_received": 2500, "amount_refunded": 0, "order_id": "ord_X",
        "customer_id": "cus_42", "connector": "mockstripe", "payment_method": payment_method,
        "last_error": None, "review_required": False, "metadata": {"k": "v"},
        "created_at": T0, "updated_at": T1, "merchant_id": "mer_SECRET", "pinned_connector": None,
    }
    row.update(over)
    return row


def _attempt_row(**over):
    row = {"id": "att_1", "connector": "mockstripe", "status": "succeeded", "connector_txn_id": "ch_1",
           "error_code": None, "created_at": T0, "payment_id": "pay_ABC"}
    row.update(over)
    return row


CARD = {"type": "card", "card": {"brand": "visa", "first6": "424242", "last4": "4242"}}


def test_payment_rendering():
    out = render.payment(_payment_row(CARD), [_attempt_row()])
    assert set(out) == API_PAYMENT_FIELDS
    assert out["object"] == "payment"
    assert out["id"] == "pay_ABC"
    assert out["amount"] == 2500
    assert out["amount_received"] == 2500
    assert out["payment_method"] == {"type": "card", "card": {"brand": "visa", "last4": "4242"}}
    assert out["created_at"] == "2026-11-22T04:13:48.123Z"
    assert out["updated_at"] == "2026-11-22T04:13:49.456Z"
    assert out["attempts"] == [{"id": "att_1", "object": "payment_attempt", "connector": "mockstripe",
                                "status": "succeeded", "connector_txn_id": "ch_1", "error_code": None,
                                "created_at": "2026-11-22T04:13:48.123Z"}]
    # Internal columns stay internal.
    assert "merchant_id" not in out
    assert "pinned_connector" not in out
    json.dumps(out)  # plain JSON


def _walk(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_payment_never_exposes_first6():
    card = {"type": "card", "card": {"brand": "visa", "first6": "400000", "last4": "0259", "exp": "12/30"}}
    out = render.payment(_payment_row(card), [_attempt_row()])
    text = json.dumps(out)
    assert "first6" not in text
    assert "400000" not in text
    assert out["payment_method"]["card"] == {"brand": "visa", "last4": "0259"}


@settings(max_examples=150, deadline=None)
@given(first6=st.text(alphabet="0123456789", min_size=6, max_size=6),
       last4=st.text(alphabet="0123456789", min_size=4, max_size=4),
       brand=st.sampled_from(["visa", "mastercard", "amex", "discover", "unknown"]))
def test_payment_never_exposes_first6_property(first6, last4, brand):
    row = _payment_row({"type": "card", "card": {"brand": brand, "first6": first6, "last4": last4}},
                       amount=1, amount_received=1)
    out = render.payment(row)
    leaves = list(_walk(out))
    assert "first6" not in leaves
    assert not any(isinstance(v, str) and first6 in v for v in leaves)
    assert out["payment_method"]["card"] == {"brand": brand, "last4": last4}


def test_payment_method_upi_and_others():
    upi = render.public_payment_method({"type": "upi", "upi": {"vpa": "success@upi", "extra": "x"}})
    assert upi == {"type": "upi", "upi": {"vpa": "success@upi"}}
    assert render.public_payment_method({"type": "netbanking", "netbanking": {"bank": "HDFC"}}) == {
        "type": "netbanking"}
    assert render.public_payment_method({}) == {"type": None}


def test_order_rendering():
    row = {"id": "ord_1", "amount": 900, "currency": "INR", "customer_id": None, "status": "created",
           "metadata": {}, "created_at": T0, "updated_at": T1, "merchant_id": "mer_1"}
    out = render.order(row, iter(["pay_1", "pay_2"]))
    assert out == {"id": "ord_1", "object": "order", "amount": 900, "currency": "INR", "customer_id": None,
                   "status": "created", "payment_ids": ["pay_1", "pay_2"], "metadata": {},
                   "created_at": "2026-11-22T04:13:48.123Z", "updated_at": "2026-11-22T04:13:49.456Z"}
    assert render.order(row)["payment_ids"] == []


def test_event_rendering():
    row = {"id": "evt_1", "type": "payment.succeeded", "seq": 7, "created_at": T0,
           "data": {"id": "pay_1", "object": "payment"}}
    assert render.event(row) == {"id": "evt_1", "object": "event", "type": "payment.succeeded", "seq": 7,
                                 "created_at": "2026-11-22T04:13:48.123Z",
                                 "data": {"object": {"id": "pay_1", "object": "payment"}}}


def test_merchant_and_page():
    assert render.merchant({"id": "mer_1", "name": "Acme", "created_at": T0, "api_key_hash": "h"}) == {
        "id": "mer_1", "object": "merchant", "name": "Acme", "created_at": "2026-11-22T04:13:48.123Z"}
    assert render.page([{"id": "a"}], True) == {"object": "list", "data": [{"id": "a"}], "has_more": True}
    assert render.page([], False) == {"object": "list", "data": [], "has_more": False}


def test_next_action_shows_only_while_the_customer_must_act():
    action = {"type": "connector_sdk", "connector_sdk": {"connector": "stripe", "data": {"client_secret": "s"}}}
    waiting = render.payment(_payment_row(CARD, status="requires_action", next_action=action))
    assert waiting["next_action"] == action
    assert waiting["cancellation_reason"] is None
    for status in ("requires_confirmation", "processing", "requires_capture", "succeeded", "failed", "canceled"):
        assert render.payment(_payment_row(CARD, status=status, next_action=action))["next_action"] is None
    abandoned = render.payment(_payment_row(CARD, status="canceled", cancellation_reason="abandoned"))
    assert abandoned["cancellation_reason"] == "abandoned"
    # Rows read before v1.2's columns existed (a snapshot built in memory) render them as null.
    assert render.payment(_payment_row(CARD))["next_action"] is None


def test_payment_method_token_shows_the_token_and_what_the_gateway_told():
    stored = {"type": "card", "token": "pm_card_visa", "card": {"brand": "visa", "last4": "4242"}}
    assert render.public_payment_method(stored) == stored
    assert render.public_payment_method({"type": "card", "token": "pm_card_visa"}) == {
        "type": "card", "token": "pm_card_visa"}
