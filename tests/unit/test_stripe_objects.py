"""domain.stripe_objects on Stripe's documented shapes (API reference: PaymentIntent,
Refund, errors), including what localstripe never produces: ``redirect_to_url``
next actions (it refuses ``return_url``), ``decline_code``s and 402 bodies that
carry the PaymentIntent, idempotency errors, rate limits."""

from __future__ import annotations

import pytest

from domain import stripe_objects as so
from domain.payments import OutcomeKind

CLIENT_SECRET = "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"


def intent(status: str, **fields) -> dict:
    """A PaymentIntent as Stripe's API reference shows it (2026 API version: ids, not objects)."""
    return {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent", "amount": 2000, "currency": "usd",
            "status": status, "client_secret": CLIENT_SECRET, "capture_method": "automatic",
            "payment_method": "pm_1MtwBwLkdIwHu7ixZYzR3X3v", "latest_charge": None, "last_payment_error": None,
            "next_action": None, "metadata": {"payment_id": "pay_1"}, **fields}


@pytest.mark.parametrize(("status", "kind"), [
    ("succeeded", OutcomeKind.SUCCEEDED), ("requires_capture", OutcomeKind.AUTHORIZED),
    ("processing", OutcomeKind.PENDING), ("canceled", OutcomeKind.CANCELED),
    ("requires_confirmation", OutcomeKind.UNKNOWN),
])
def test_statuses(status, kind):
    outcome = so.outcome_of_payment_intent(intent(status))
    assert (outcome.kind, outcome.connector_txn_id) == (kind, "pi_3MtwBwLkdIwHu7ix28a3tqPa")
    assert outcome.next_action is None


def test_redirect_to_url_when_a_return_url_was_sent():
    redirect = {"url": "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_3Mtw",
                "return_url": "https://shop.example/return"}
    outcome = so.outcome_of_payment_intent(intent("requires_action", next_action={
        "type": "redirect_to_url", "redirect_to_url": redirect}))
    assert outcome.kind is OutcomeKind.REQUIRES_ACTION
    assert outcome.next_action == {"type": "redirect_to_url", "redirect_to_url": redirect}


def test_stripe_sdk_action_is_connector_sdk_with_the_client_secret():
    outcome = so.outcome_of_payment_intent(intent("requires_action", next_action={
        "type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect",
                                                     "stripe_js": "https://hooks.stripe.com/redirect/authenticate"}}))
    assert outcome.next_action == {"type": "connector_sdk", "connector_sdk": {
        "connector": "stripe", "data": {"client_secret": CLIENT_SECRET}}}


def test_a_redirect_without_url_falls_back_to_the_sdk():
    outcome = so.outcome_of_payment_intent(intent("requires_action", next_action={"type": "redirect_to_url",
                                                                                  "redirect_to_url": {}}))
    assert outcome.next_action["type"] == "connector_sdk"


def test_failed_confirmation_carries_the_issuer_code():
    outcome = so.outcome_of_payment_intent(intent("requires_payment_method", last_payment_error={
        "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds."}))
    assert (outcome.kind, outcome.error_code, outcome.message) == (
        OutcomeKind.DECLINED, "insufficient_funds", "Your card has insufficient funds.")


def test_cancellation_reason_is_kept():
    outcome = so.outcome_of_payment_intent(intent("canceled", cancellation_reason="abandoned"))
    assert (outcome.kind, outcome.error_code) == (OutcomeKind.CANCELED, "abandoned")


def test_card_details_from_an_expanded_payment_method_or_charge():
    pm = {"id": "pm_1", "object": "payment_method", "type": "card", "card": {"brand": "mastercard", "last4": "4444"}}
    assert so.method_details(intent("succeeded", payment_method=pm)) == {"brand": "mastercard", "last4": "4444"}
    charge = {"id": "ch_1", "payment_method_details": {"type": "card", "card": {"brand": "Visa", "last4": "4242"}}}
    assert so.method_details(intent("succeeded", latest_charge=charge)) == {"brand": "visa", "last4": "4242"}
    assert so.method_details(intent("succeeded")) is None


def test_a_402_with_the_payment_intent_is_a_decline_of_that_intent():
    # Stripe's card error on POST /v1/payment_intents with confirm=true.
    error = {"type": "card_error", "code": "card_declined", "decline_code": "stolen_card",
             "message": "Your card was declined.", "charge": "ch_1",
             "doc_url": "https://stripe.com/docs/error-codes/card-declined",
             "payment_intent": intent("requires_payment_method", last_payment_error={
                 "code": "card_declined", "decline_code": "stolen_card"}),
             "payment_method": {"id": "pm_1", "card": {"brand": "visa", "last4": "9979"}}}
    assert so.classify_error(402, error) is so.ErrorClass.DECLINED
    outcome = so.declined_outcome(error)
    assert (outcome.kind, outcome.connector_txn_id, outcome.error_code) == (
        OutcomeKind.DECLINED, "pi_3MtwBwLkdIwHu7ix28a3tqPa", "stolen_card")
    assert outcome.method_details == {"brand": "visa", "last4": "9979"}


def test_a_402_without_the_intent_still_declines():
    outcome = so.declined_outcome({"type": "invalid_request_error", "code": "card_declined", "charge": "ch_1",
                                   "message": "Your card was declined."})
    assert (outcome.connector_txn_id, outcome.error_code) == (None, "card_declined")


@pytest.mark.parametrize(("status", "error", "expected"), [
    (401, {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****1234"},
     so.ErrorClass.CREDENTIALS),
    (403, {"type": "invalid_request_error", "message": "The provided key does not have access"},
     so.ErrorClass.CREDENTIALS),
    (400, {"type": "invalid_request_error", "code": "parameter_invalid_integer", "param": "amount"},
     so.ErrorClass.REFUSED),
    (404, {"type": "invalid_request_error", "code": "resource_missing", "param": "intent"}, so.ErrorClass.REFUSED),
    (429, {"type": "invalid_request_error", "code": "rate_limit"}, so.ErrorClass.RATE_LIMITED),
    (429, {"type": "invalid_request_error", "code": "lock_timeout"}, so.ErrorClass.RATE_LIMITED),
    (400, {"type": "invalid_request_error", "code": "rate_limit"}, so.ErrorClass.RATE_LIMITED),
    (400, {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the "
                                                   "same parameters they were first used with."},
     so.ErrorClass.IDEMPOTENCY),
    (409, {"type": "invalid_request_error", "code": "idempotency_key_in_use"}, so.ErrorClass.IDEMPOTENCY),
    (500, {"type": "api_error", "message": "An unknown error occurred"}, so.ErrorClass.SERVER),
    (503, {}, so.ErrorClass.SERVER),
    (None, {}, so.ErrorClass.UNKNOWN),
])
def test_error_classes(status, error, expected):
    assert so.classify_error(status, error) is expected


def test_create_parameters():
    params = so.payment_intent_params(amount=2000, currency="EUR", capture_method="manual", token="pm_card_visa",
                                      metadata={"payment_id": "pay_1"}, return_url=None)
    assert params == {"amount": 2000, "currency": "eur", "payment_method": "pm_card_visa",
                      "payment_method_types": ["card"], "confirm": True, "capture_method": "manual",
                      "metadata": {"payment_id": "pay_1"}, "expand": ["payment_method"]}
    with_return = so.payment_intent_params(amount=1, currency="usd", capture_method="automatic", token="pm_1",
                                           metadata={}, return_url="https://shop.example/r")
    assert with_return["return_url"] == "https://shop.example/r"
    assert with_return["capture_method"] == "automatic"


def test_refund_parameters_send_only_stripe_reasons():
    base = {"payment_intent": "pi_1", "amount": 500, "metadata": {"refund_id": "re_1"}}
    assert so.refund_params(**base, reason="requested_by_customer")["reason"] == "requested_by_customer"
    assert "reason" not in so.refund_params(**base, reason="the customer changed their mind")


@pytest.mark.parametrize(("refund", "expected"), [
    ({"id": "re_1", "object": "refund", "status": "succeeded"}, ("succeeded", "re_1", None)),
    ({"id": "re_1", "object": "refund", "status": "pending"}, ("pending", "re_1", None)),
    ({"id": "re_1", "object": "refund", "status": "requires_action"}, ("pending", "re_1", None)),
    ({"id": "re_1", "object": "refund", "status": "failed", "failure_reason": "expired_or_canceled_card"},
     ("failed", "re_1", "expired_or_canceled_card")),
    ({"id": "re_1", "object": "refund", "status": "canceled"}, ("failed", "re_1", "refund_canceled")),
])
def test_refund_statuses(refund, expected):
    submission = so.refund_submission(refund)
    assert (submission.status, submission.reference, submission.error_code) == expected


def test_refund_found_by_our_id():
    refunds = [{"id": "re_a", "metadata": {"refund_id": "re_ours_1"}}, {"id": "re_b", "metadata": {}},
               {"id": "re_c", "metadata": {"refund_id": "re_ours_2"}}]
    assert so.refund_with_metadata(refunds, "refund_id", "re_ours_2")["id"] == "re_c"
    assert so.refund_with_metadata(refunds, "refund_id", "re_ours_3") is None
