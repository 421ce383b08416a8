"""What StripeConnector puts on the wire and how it reads Stripe's answers that
localstripe never gives: Idempotency-Key on every mutating call (localstripe
ignores it), the create replayed byte for byte by reconciliation, ``return_url``
and redirect next actions (localstripe refuses ``return_url``), 402 bodies with
``decline_code``, 409/429/5xx, a hung request. Against a scripted stand-in over
real HTTP (tests/stand_ins/stripe_recorder.py); answers follow Stripe's API reference."""

from __future__ import annotations

import pytest
import trio

from domain.payments import OutcomeKind
from gateways.base import (AuthorizeRequest, ConnectorRefused, ConnectorServerError, ConnectorTimeout,
                           RefundRequest, nothing_charged, operation_key)
from gateways.stripe import StripeConnector, StripeIdempotencyConflict, StripeRateLimited
from tests.stand_ins.stripe_recorder import StripeRecorder

pytestmark = pytest.mark.timeout(30)
PI = "pi_3MtwBwLkdIwHu7ix28a3tqPa"
REQUEST = AuthorizeRequest(payment_id="pay_01J1", attempt_id="att_01J1", merchant_id="mer_01J1", amount=2000,
                           currency="EUR", capture_method="manual", payment_method={"type": "card", "token": "pm_1"},
                           return_url="https://shop.example/back", order_id="ord_01J1")


def intent(status: str, **fields) -> dict:
    return {"id": PI, "object": "payment_intent", "amount": 2000, "currency": "eur", "status": status,
            "client_secret": f"{PI}_secret_x", "payment_method": {"id": "pm_1", "object": "payment_method",
                                                                   "card": {"brand": "visa", "last4": "3220"}},
            "next_action": None, "last_payment_error": None, "metadata": {}, **fields}


@pytest.fixture
async def stripe_at(nursery):
    recorder = StripeRecorder()
    await recorder.serve(nursery)
    connector = StripeConnector({"secret_key": "sk_test_wire"}, api_base=recorder.url, account_id="mca_wire",
                                timeout_s=1)
    try:
        yield recorder, connector
    finally:
        await connector.aclose()


async def test_authorize_sends_the_token_return_url_metadata_and_the_attempt_key(stripe_at):
    recorder, connector = stripe_at
    redirect = {"url": "https://hooks.stripe.com/3d_secure_2/hosted?payment_intent=" + PI,
                "return_url": "https://shop.example/back"}
    recorder.answers.append((200, intent("requires_action", next_action={"type": "redirect_to_url",
                                                                          "redirect_to_url": redirect})))
    outcome = await connector.authorize(REQUEST)
    assert outcome.kind is OutcomeKind.REQUIRES_ACTION
    assert outcome.next_action == {"type": "redirect_to_url", "redirect_to_url": redirect}
    assert outcome.method_details == {"brand": "visa", "last4": "3220"}
    [sent] = recorder.requests
    assert (sent.method, sent.path) == ("POST", "/v1/payment_intents")
    assert sent.headers["idempotency-key"] == "att_01J1"
    assert sent.headers["authorization"] == "Bearer sk_test_wire"
    assert sent.headers["stripe-version"]  # the SDK pins its API version
    assert sent.form == {"amount": "2000", "currency": "eur", "payment_method": "pm_1",
                         "payment_method_types[0]": "card", "confirm": "true", "capture_method": "manual",
                         "metadata[payment_id]": "pay_01J1", "metadata[attempt_id]": "att_01J1",
                         "metadata[merchant_id]": "mer_01J1", "metadata[order_id]": "ord_01J1",
                         "expand[0]": "payment_method", "return_url": "https://shop.example/back"}


async def test_reconciling_an_unanswered_create_replays_it_with_the_same_key(stripe_at):
    recorder, connector = stripe_at
    recorder.answers += ["hang", (200, intent("requires_action")), (200, intent("requires_capture"))]
    with pytest.raises(ConnectorTimeout) as lost:
        await connector.authorize(REQUEST)
    assert not nothing_charged(connector, lost.value)
    # Stripe answers the replay with the first request's stored result (the customer had
    # still to act then); the PaymentIntent it names is read for its state now.
    outcome = await connector.retrieve(None, REQUEST.payment_id, request=REQUEST)
    assert (outcome.kind, outcome.connector_txn_id) == (OutcomeKind.AUTHORIZED, PI)
    first, replay, read = recorder.requests
    assert (replay.path, replay.headers["idempotency-key"], replay.form) == (first.path, "att_01J1", first.form)
    assert (read.method, read.path) == ("GET", f"/v1/payment_intents/{PI}?expand[0]=payment_method")


async def test_retrieve_by_id_reads_the_intent(stripe_at):
    recorder, connector = stripe_at
    recorder.answers.append((200, intent("succeeded")))
    assert (await connector.retrieve(PI, "pay_01J1")).kind is OutcomeKind.SUCCEEDED
    [sent] = recorder.requests
    assert (sent.method, sent.path) == ("GET", f"/v1/payment_intents/{PI}?expand[0]=payment_method")


async def test_follow_up_calls_carry_their_own_keys(stripe_at):
    recorder, connector = stripe_at
    refund_body = {"id": "re_1", "object": "refund", "status": "pending", "amount": 500}
    dispute_body = {"id": "du_1", "object": "dispute", "status": "under_review"}
    recorder.answers += [(200, intent("succeeded")), (200, intent("canceled")), (200, refund_body),
                         (200, dispute_body), (200, dispute_body | {"status": "lost"})]
    await connector.capture(PI, 1500, idempotency_key=operation_key("att_01J1", "capture"))
    await connector.void(PI, idempotency_key=operation_key("att_01J1", "cancel"))
    submitted = await connector.refund(RefundRequest("re_01JOURS", "pay_01J1", "mer_01J1", PI, 500, "EUR",
                                                     reason="requested_by_customer"))
    assert (submitted.status, submitted.reference) == ("pending", "re_1")
    await connector.submit_dispute_evidence("du_1", "delivered, signed for", payment_id="pay_01J1",
                                            dispute_id="dp_01J1", amount=2000, currency="EUR")
    await connector.accept_dispute("du_1")
    capture, cancel, refund, evidence, close = recorder.requests
    assert (capture.path, capture.headers["idempotency-key"], capture.form) == (
        f"/v1/payment_intents/{PI}/capture", "att_01J1:capture", {"amount_to_capture": "1500"})
    assert (cancel.path, cancel.headers["idempotency-key"], cancel.form) == (
        f"/v1/payment_intents/{PI}/cancel", "att_01J1:cancel", {})
    assert (refund.path, refund.headers["idempotency-key"]) == ("/v1/refunds", "re_01JOURS")
    assert refund.form == {"payment_intent": PI, "amount": "500", "metadata[refund_id]": "re_01JOURS",
                           "metadata[payment_id]": "pay_01J1", "metadata[merchant_id]": "mer_01J1",
                           "reason": "requested_by_customer"}
    assert (evidence.path, evidence.headers["idempotency-key"]) == ("/v1/disputes/du_1", "dp_01J1:evidence")
    assert evidence.form == {"evidence[uncategorized_text]": "delivered, signed for", "submit": "true",
                             "metadata[payment_id]": "pay_01J1", "metadata[dispute_id]": "dp_01J1"}
    assert (close.path, close.headers["idempotency-key"]) == ("/v1/disputes/du_1/close", "du_1:close")


async def test_a_card_error_is_a_decline_of_the_named_intent(stripe_at):
    recorder, connector = stripe_at
    recorder.answers.append((402, {"error": {
        "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "charge": "ch_1",
        "message": "Your card has insufficient funds.", "payment_intent": intent("requires_payment_method"),
        "doc_url": "https://stripe.com/docs/error-codes/card-declined"}}))
    outcome = await connector.authorize(REQUEST)
    assert (outcome.kind, outcome.connector_txn_id, outcome.error_code, outcome.message) == (
        OutcomeKind.DECLINED, PI, "insufficient_funds", "Your card has insufficient funds.")


@pytest.mark.parametrize(("status", "error", "raised", "safe"), [
    (500, {"type": "api_error", "message": "An unknown error occurred"}, ConnectorServerError, False),
    (409, {"type": "invalid_request_error", "code": "idempotency_key_in_use",
           "message": "There is currently another in-progress request using this idempotent key."},
     StripeIdempotencyConflict, False),
    (400, {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same "
                                                   "parameters they were first used with."},
     StripeIdempotencyConflict, False),
    (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"},
     StripeRateLimited, True),
    (400, {"type": "invalid_request_error", "code": "amount_too_small", "param": "amount",
           "message": "Amount must be at least €0.50 eur"}, ConnectorRefused, True),
])
async def test_error_answers_and_what_they_guarantee(stripe_at, status, error, raised, safe):
    recorder, connector = stripe_at
    recorder.answers.append((status, {"error": error}))
    with pytest.raises(raised) as failed:
        await connector.authorize(REQUEST)
    assert nothing_charged(connector, failed.value) is safe
    assert len(recorder.requests) == 1  # max_network_retries=0: the SDK never asks again by itself


async def test_calls_run_concurrently_under_trio(stripe_at):
    recorder, connector = stripe_at
    recorder.answers += [(200, intent("succeeded"))] * 5
    results = []

    async def one():
        results.append(await connector.retrieve(PI, "pay_01J1"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert [o.kind for o in results] == [OutcomeKind.SUCCEEDED] * 5
