"""gateways.stripe.StripeConnector (the official SDK's async client on httpx, under
trio: these tests run in pytest-trio) against localstripe, a real stateful Stripe
stand-in in its own process. Each flow is checked on both sides: what the
connector answered, and what localstripe then holds."""

from __future__ import annotations

import secrets

import pytest

from domain.payments import OutcomeKind
from gateways.base import (AuthorizeRequest, ConnectorRefused, CredentialsInvalid, RefundRequest, nothing_charged,
                           operation_key)
from gateways.stripe import StripeConnector, StripeNotSent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def connector(localstripe):
    c = StripeConnector({"secret_key": localstripe.secret_key}, api_base=localstripe.url, account_id="mca_test",
                        timeout_s=10)
    try:
        yield c
    finally:
        await c.aclose()


def _request(token: str, capture_method: str = "automatic", amount: int = 1000) -> AuthorizeRequest:
    tag = secrets.token_hex(6)
    return AuthorizeRequest(payment_id=f"pay_{tag}", attempt_id=f"att_{tag}", merchant_id="mer_stripe",
                            amount=amount, currency="EUR", capture_method=capture_method,
                            payment_method={"type": "card", "token": token})


def _intent_of(localstripe, attempt_id: str) -> list[dict]:
    return [pi for pi in localstripe.payment_intents() if pi["metadata"].get("attempt_id") == attempt_id]


async def test_token_payment_succeeds(connector, localstripe):
    request = _request("pm_card_visa")
    outcome = await connector.authorize(request)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.method_details == {"brand": "visa", "last4": "4242"}
    pi = localstripe.payment_intent(outcome.connector_txn_id)
    assert (pi["status"], pi["amount"], pi["currency"]) == ("succeeded", 1000, "eur")
    assert pi["metadata"] == {"payment_id": request.payment_id, "attempt_id": request.attempt_id,
                              "merchant_id": "mer_stripe"}
    assert pi["capture_method"] == "automatic"


async def test_declined_card_is_a_decline_with_its_code(connector, localstripe):
    request = _request("pm_card_chargeCustomerFail")
    outcome = await connector.authorize(request)
    assert (outcome.kind, outcome.error_code) == (OutcomeKind.DECLINED, "card_declined")
    assert outcome.message == "Your card was declined."
    # localstripe's 402 does not name the PaymentIntent (Stripe's does): found by metadata.
    [pi] = _intent_of(localstripe, request.attempt_id)
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["code"] == "card_declined"


async def test_manual_capture_of_part(connector, localstripe):
    request = _request("pm_card_visa", "manual", amount=1000)
    outcome = await connector.authorize(request)
    assert outcome.kind is OutcomeKind.AUTHORIZED
    assert localstripe.payment_intent(outcome.connector_txn_id)["status"] == "requires_capture"
    await connector.capture(outcome.connector_txn_id, 600, idempotency_key=operation_key(request.attempt_id, "capture"))
    assert (await connector.retrieve(outcome.connector_txn_id, request.payment_id)).kind is OutcomeKind.SUCCEEDED
    pi = localstripe.payment_intent(outcome.connector_txn_id)
    assert pi["status"] == "succeeded"
    assert pi["latest_charge"]["captured"] is True
    # localstripe models a partial capture as a full capture and a refund of the rest.
    assert pi["latest_charge"]["amount_refunded"] == 400


async def test_capture_beyond_what_is_held_is_refused_and_safe(connector, localstripe):
    outcome = await connector.authorize(_request("pm_card_visa", "manual", amount=500))
    with pytest.raises(ConnectorRefused) as refused:
        await connector.capture(outcome.connector_txn_id, 900)
    assert nothing_charged(connector, refused.value)
    assert localstripe.payment_intent(outcome.connector_txn_id)["status"] == "requires_capture"


async def test_cancel_an_authorisation(connector, localstripe):
    request = _request("pm_card_visa", "manual")
    outcome = await connector.authorize(request)
    await connector.void(outcome.connector_txn_id, idempotency_key=operation_key(request.attempt_id, "cancel"))
    assert (await connector.retrieve(outcome.connector_txn_id, request.payment_id)).kind is OutcomeKind.CANCELED
    assert localstripe.payment_intent(outcome.connector_txn_id)["status"] == "canceled"
    with pytest.raises(ConnectorRefused):  # a second cancel: Stripe says the state does not allow it
        await connector.void(outcome.connector_txn_id)


async def test_refund_and_its_reconciliation_never_refund_twice(connector, localstripe):
    request = _request("pm_card_visa")
    outcome = await connector.authorize(request)
    tag = secrets.token_hex(6)
    refund = RefundRequest(refund_id=f"re_{tag}", payment_id=request.payment_id, merchant_id="mer_stripe",
                           connector_txn_id=outcome.connector_txn_id, amount=300, currency="EUR")
    submitted = await connector.refund(refund)
    assert submitted.status == "succeeded"
    assert submitted.reference.startswith("re_")
    # Reconciliation without Stripe's id (the create's answer was lost): found by metadata, not re-created.
    again = await connector.retrieve_refund(refund, None)
    assert again == submitted
    assert (await connector.retrieve_refund(refund, submitted.reference)) == submitted
    [held] = localstripe.refunds_of(outcome.connector_txn_id)
    assert (held["id"], held["amount"], held["metadata"]["refund_id"]) == (submitted.reference, 300, refund.refund_id)


async def test_three_d_secure_then_authenticated(connector, localstripe):
    token = localstripe.card_payment_method("4000002500003155")
    request = _request(token)
    outcome = await connector.authorize(request)
    pi = localstripe.payment_intent(outcome.connector_txn_id)
    assert outcome.kind is OutcomeKind.REQUIRES_ACTION
    assert pi["status"] == "requires_action"
    assert outcome.next_action == {"type": "connector_sdk", "connector_sdk": {
        "connector": "stripe", "data": {"client_secret": pi["client_secret"]}}}
    assert outcome.method_details == {"brand": "visa", "last4": "3155"}
    still = await connector.retrieve(outcome.connector_txn_id, request.payment_id)
    assert still.kind is OutcomeKind.REQUIRES_ACTION
    localstripe.authenticate(outcome.connector_txn_id, success=True)
    assert (await connector.retrieve(outcome.connector_txn_id, request.payment_id)).kind is OutcomeKind.SUCCEEDED


async def test_three_d_secure_failed(connector, localstripe):
    request = _request(localstripe.card_payment_method("4000002500003155"))
    outcome = await connector.authorize(request)
    localstripe.authenticate(outcome.connector_txn_id, success=False)
    failed = await connector.retrieve(outcome.connector_txn_id, request.payment_id)
    assert (failed.kind, failed.error_code) == (OutcomeKind.DECLINED, "payment_intent_authentication_failure")
    assert localstripe.payment_intent(outcome.connector_txn_id)["status"] == "requires_payment_method"


async def test_cancel_while_waiting_for_the_customer(connector, localstripe):
    request = _request(localstripe.card_payment_method("4000002500003155"), "manual")
    outcome = await connector.authorize(request)
    await connector.void(outcome.connector_txn_id, idempotency_key=operation_key(request.attempt_id, "cancel"))
    assert (await connector.retrieve(outcome.connector_txn_id, request.payment_id)).kind is OutcomeKind.CANCELED
    assert localstripe.payment_intent(outcome.connector_txn_id)["status"] == "canceled"


async def test_credentials_refused_and_unreachable_are_safe(localstripe):
    refused = StripeConnector({"secret_key": "rk_test_not_accepted"}, api_base=localstripe.url,
                              account_id="mca_bad", timeout_s=5)
    unreachable = StripeConnector({"secret_key": "sk_test_x"}, api_base="http://127.0.0.1:9",
                                  account_id="mca_down", timeout_s=5)
    try:
        with pytest.raises(CredentialsInvalid) as bad:
            await refused.verify_credentials()
        assert "rk_test" not in str(bad.value)
        assert nothing_charged(refused, bad.value)
        with pytest.raises(StripeNotSent) as down:
            await unreachable.authorize(_request("pm_card_visa"))
        assert nothing_charged(unreachable, down.value)
    finally:
        await refused.aclose()
        await unreachable.aclose()


async def test_verify_credentials_tells_test_mode(connector):
    assert await connector.verify_credentials() is False


async def test_payouts_are_refused(connector):
    from gateways.base import PayoutRequest

    with pytest.raises(ConnectorRefused) as refused:
        await connector.payout(PayoutRequest("txn_1", "acct_1", "mer_1", 100, "EUR"))
    assert refused.value.code == "payouts_unsupported"
