"""Stripe's own test mode, through the real connector: the same flows as against
localstripe (tests/integration/test_stripe_connector.py) plus what localstripe
cannot show (idempotent replay, decline codes, redirect next actions).

Run only on purpose: ``pytest -m live tests/live/test_stripe_live.py`` with
``PAYCAST_LIVE_STRIPE_SECRET_KEY`` set to a **test-mode** secret key (``sk_test_…``,
Stripe dashboard → Developers → API keys). Everything it makes lives in that test
account (PaymentIntents and refunds, test cards only).
"""

from __future__ import annotations

import os
import secrets

import pytest

from domain.payments import OutcomeKind
from gateways.base import AuthorizeRequest, CredentialsInvalid, RefundRequest, operation_key
from gateways.stripe import StripeConnector

pytestmark = [pytest.mark.live, pytest.mark.timeout(60)]
SECRET_KEY = os.environ.get("PAYCAST_LIVE_STRIPE_SECRET_KEY", "")
if not SECRET_KEY:
    pytestmark.append(pytest.mark.skip(reason="PAYCAST_LIVE_STRIPE_SECRET_KEY not set"))
elif not SECRET_KEY.startswith(("sk_test_", "rk_test_")):
    pytestmark.append(pytest.mark.skip(reason="PAYCAST_LIVE_STRIPE_SECRET_KEY must be a test-mode key"))


@pytest.fixture
async def connector():
    c = StripeConnector({"secret_key": SECRET_KEY}, api_base=None, account_id="mca_live", timeout_s=20)
    try:
        yield c
    finally:
        await c.aclose()


def _request(token: str, capture_method: str = "automatic", return_url: str | None = None) -> AuthorizeRequest:
    tag = secrets.token_hex(8)
    return AuthorizeRequest(payment_id=f"pay_live_{tag}", attempt_id=f"att_live_{tag}", merchant_id="mer_live",
                            amount=1500, currency="EUR", capture_method=capture_method,
                            payment_method={"type": "card", "token": token}, return_url=return_url)


async def test_credentials_are_test_mode(connector):
    assert await connector.verify_credentials() is False


async def test_a_wrong_key_is_refused():
    wrong = StripeConnector({"secret_key": "sk_test_" + "0" * 24}, api_base=None, account_id="mca_x", timeout_s=20)
    try:
        with pytest.raises(CredentialsInvalid):
            await wrong.verify_credentials()
    finally:
        await wrong.aclose()


async def test_token_payment_and_its_idempotent_replay(connector):
    request = _request("pm_card_visa")
    outcome = await connector.authorize(request)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.method_details == {"brand": "visa", "last4": "4242"}
    replayed = await connector.retrieve(None, request.payment_id, request=request)  # same Idempotency-Key
    assert (replayed.kind, replayed.connector_txn_id) == (OutcomeKind.SUCCEEDED, outcome.connector_txn_id)


@pytest.mark.parametrize(("token", "code"), [("pm_card_chargeDeclined", "generic_decline"),
                                             ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds")])
async def test_declines_carry_the_decline_code(connector, token, code):
    outcome = await connector.authorize(_request(token))
    assert (outcome.kind, outcome.error_code) == (OutcomeKind.DECLINED, code)
    assert outcome.connector_txn_id
    assert outcome.connector_txn_id.startswith("pi_")


async def test_partial_capture_cancel_and_refund(connector):
    held = _request("pm_card_visa", "manual")
    outcome = await connector.authorize(held)
    assert outcome.kind is OutcomeKind.AUTHORIZED
    await connector.capture(outcome.connector_txn_id, 1000, idempotency_key=operation_key(held.attempt_id, "capture"))
    assert (await connector.retrieve(outcome.connector_txn_id, held.payment_id)).kind is OutcomeKind.SUCCEEDED
    refund = RefundRequest(f"re_live_{secrets.token_hex(6)}", held.payment_id, "mer_live",
                           outcome.connector_txn_id, 400, "EUR")
    submitted = await connector.refund(refund)
    assert submitted.status in ("succeeded", "pending")
    assert (await connector.retrieve_refund(refund, None)).reference == submitted.reference

    other = _request("pm_card_visa", "manual")
    second = await connector.authorize(other)
    await connector.void(second.connector_txn_id, idempotency_key=operation_key(other.attempt_id, "cancel"))
    assert (await connector.retrieve(second.connector_txn_id, other.payment_id)).kind is OutcomeKind.CANCELED


async def test_three_d_secure_next_actions(connector):
    sdk = await connector.authorize(_request("pm_card_threeDSecure2Required"))
    assert sdk.kind is OutcomeKind.REQUIRES_ACTION
    assert sdk.next_action["type"] in ("connector_sdk", "redirect_to_url")
    redirect = await connector.authorize(_request("pm_card_threeDSecure2Required",
                                                  return_url="https://example.com/back"))
    assert redirect.next_action["type"] == "redirect_to_url"
    assert redirect.next_action["redirect_to_url"]["return_url"] == "https://example.com/back"
    await connector.void(redirect.connector_txn_id)
    assert (await connector.retrieve(redirect.connector_txn_id, "pay")).kind is OutcomeKind.CANCELED
