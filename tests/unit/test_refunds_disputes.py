"""domain/refunds.py and domain/disputes.py: transition tables, the refund
amount rule, and the merchant balance view."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from domain import disputes, refunds
from domain.errors import DisputeStateError, IllegalTransition, InvalidRequest, RefundExceedsPayment, StateError
from app.errors import status_of  # the HTTP status is the edge's mapping

# ------------------------------------------------------------------------ refunds


def test_refund_transitions_are_pending_to_a_final_status_only():
    assert refunds.next_status("pending", refunds.Trigger.SUCCEED) is refunds.Status.SUCCEEDED
    assert refunds.next_status("pending", refunds.Trigger.FAIL) is refunds.Status.FAILED
    for final in refunds.TERMINAL:
        for trigger in refunds.Trigger:
            assert not refunds.can(final, trigger)  # late or duplicate answers change nothing
            with pytest.raises(IllegalTransition) as err:
                refunds.next_status(final, trigger)
            assert (err.value.machine, err.value.current, err.value.trigger) == ("refund", final.value, trigger.value)


def test_only_succeeded_payments_are_refundable():
    refunds.refundable_payment("succeeded")
    for status in ("requires_confirmation", "processing", "requires_capture", "failed", "canceled"):
        with pytest.raises(StateError) as err:
            refunds.refundable_payment(status)
        assert err.value.code == "payment_unexpected_state"
        assert status_of(err.value) == 409


def test_refund_amount_defaults_to_everything_left():
    assert refunds.refund_amount(None, 1000, 0) == 1000
    assert refunds.refund_amount(None, 1000, 400) == 600
    assert refunds.refund_amount(600, 1000, 400) == 600


@pytest.mark.parametrize("requested, received, refunded", [(601, 1000, 400), (None, 1000, 1000), (1, 0, 0),
                                                            (1, 500, 500)])
def test_refund_amount_past_what_is_left_is_refused(requested, received, refunded):
    with pytest.raises(RefundExceedsPayment) as err:
        refunds.refund_amount(requested, received, refunded)
    assert err.value.code == "refund_exceeds_payment"
    assert err.value.type == "state_error"
    assert err.value.param == "amount"


@pytest.mark.parametrize("requested", [0, -5, True, 1.5, "10"])
def test_refund_amount_must_be_a_positive_integer(requested):
    with pytest.raises(InvalidRequest):
        refunds.refund_amount(requested, 1000, 0)


@given(st.integers(1, 10**9), st.lists(st.integers(1, 10**8), max_size=30))
def test_accepted_refunds_never_exceed_received(received, requests):
    refunded = 0
    for requested in requests:
        try:
            refunded += refunds.refund_amount(requested, received, refunded)
        except RefundExceedsPayment:
            assert requested > received - refunded
        assert refunded <= received


def test_order_fully_refunded():
    assert refunds.order_fully_refunded(1000, 1000)
    assert not refunds.order_fully_refunded(1000, 999)
    assert not refunds.order_fully_refunded(0, 0)


# ----------------------------------------------------------------------- disputes

EXPECTED = {
    ("needs_response", "submit_evidence"): "under_review",
    ("needs_response", "accept"): "accepted",
    ("needs_response", "win"): "won",
    ("needs_response", "lose"): "lost",
    ("under_review", "win"): "won",
    ("under_review", "lose"): "lost",
}


@pytest.mark.parametrize("status", [s.value for s in disputes.Status])
@pytest.mark.parametrize("trigger", [t.value for t in disputes.Trigger])
def test_dispute_transition_table(status, trigger):
    expected = EXPECTED.get((status, trigger))
    assert disputes.can(status, disputes.Trigger(trigger)) == (expected is not None)
    if expected:
        assert disputes.next_status(status, disputes.Trigger(trigger)).value == expected
    else:
        with pytest.raises(DisputeStateError) as err:
            disputes.next_status(status, disputes.Trigger(trigger))
        assert err.value.code == "dispute_unexpected_state"
        assert status_of(err.value) == 409
        assert isinstance(err.value, IllegalTransition)
        assert err.value.trigger == trigger


def test_terminal_disputes_never_move_and_have_events():
    for status in disputes.TERMINAL:
        assert not any(disputes.can(status, t) for t in disputes.Trigger)
        assert disputes.EVENT_FOR[status] == f"dispute.{status.value}"
    assert disputes.EVENT_FOR[disputes.Status.NEEDS_RESPONSE] == "dispute.opened"


def test_balance_holds_open_disputes_and_releases_won_ones():
    base = disputes.balance(10_000, 1_000, [])
    assert base == {"received": 10_000, "refunded": 1_000, "disputed_held": 0, "disputed_lost": 0,
                    "available": 9_000}
    held = disputes.balance(10_000, 1_000, [("needs_response", 2_000), ("under_review", 500)])
    assert held["disputed_held"] == 2_500
    assert held["available"] == 6_500
    decided = disputes.balance(10_000, 1_000, [("won", 2_000), ("lost", 500), ("accepted", 300)])
    assert decided["disputed_held"] == 0
    assert decided["disputed_lost"] == 800
    assert decided["available"] == 8_200
