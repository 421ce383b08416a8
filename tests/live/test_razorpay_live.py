"""Razorpay's own test mode, through the real connector: the check of what the
fake (tests/fakes/fake_razorpay.py) was written from the documents.

Run only on purpose: ``pytest -m live tests/live/test_razorpay_live.py`` with

* ``PAYCAST_LIVE_RAZORPAY_KEY_ID`` (``rzp_test_…``) and ``PAYCAST_LIVE_RAZORPAY_KEY_SECRET``
  (Razorpay dashboard, test mode, Settings → API Keys);
* for the webhook check, a delivery captured from Razorpay (its dashboard's
  webhook "test" or a real test-mode payment, caught by any request bin):
  ``PAYCAST_LIVE_RAZORPAY_WEBHOOK_SECRET``, ``PAYCAST_LIVE_RAZORPAY_WEBHOOK_BODY_FILE``
  (the raw body, byte for byte) and ``PAYCAST_LIVE_RAZORPAY_WEBHOOK_SIGNATURE``.

Each test skips when what it needs is not set. Orders made here are test-mode
orders nobody pays; they lapse.
"""

from __future__ import annotations

import os
import pathlib
import secrets

import pytest

from domain import razorpay_events
from domain.payments import OutcomeKind
from gateways.base import AuthorizeRequest, CredentialsInvalid
from gateways.razorpay import RazorpayConnector

pytestmark = pytest.mark.live

KEY_ID = os.environ.get("PAYCAST_LIVE_RAZORPAY_KEY_ID")
KEY_SECRET = os.environ.get("PAYCAST_LIVE_RAZORPAY_KEY_SECRET")
needs_keys = pytest.mark.skipif(not (KEY_ID and KEY_SECRET),
                                reason="PAYCAST_LIVE_RAZORPAY_KEY_ID/_KEY_SECRET not set")


@pytest.fixture
async def connector():
    conn = RazorpayConnector({"key_id": KEY_ID, "key_secret": KEY_SECRET}, account_id="mca_live", timeout_s=15)
    yield conn
    await conn.aclose()


def _request(capture_method: str = "automatic") -> AuthorizeRequest:
    suffix = secrets.token_hex(6).upper()
    return AuthorizeRequest(payment_id=f"pay_LIVE{suffix}", attempt_id=f"att_LIVE{suffix}", merchant_id="mer_LIVE",
                            amount=100, currency="INR", capture_method=capture_method,
                            payment_method={"type": "upi"})


@needs_keys
async def test_credentials_check(connector):
    assert await connector.verify_credentials() is KEY_ID.startswith("rzp_live_")
    wrong = RazorpayConnector({"key_id": KEY_ID, "key_secret": "not-the-secret"}, timeout_s=15)
    with pytest.raises(CredentialsInvalid):
        await wrong.verify_credentials()
    await wrong.aclose()


@needs_keys
async def test_order_creation_and_its_payments(connector):
    request = _request("manual")
    outcome = await connector.authorize(request)
    assert outcome.kind is OutcomeKind.REQUIRES_ACTION
    assert outcome.connector_txn_id.startswith("order_")
    assert outcome.next_action["connector_sdk"]["data"] == {"key_id": KEY_ID, "order_id": outcome.connector_txn_id,
                                                            "amount": 100, "currency": "INR"}
    # Nobody paid: the order's payments are empty, the customer still has to act.
    waiting = await connector.retrieve(outcome.connector_txn_id, request.payment_id, request=request)
    assert waiting.kind is OutcomeKind.REQUIRES_ACTION
    # An unanswered create is found again by its receipt and attempt, never created twice.
    found = await connector.retrieve(None, request.payment_id, request=request)
    assert found.connector_txn_id == outcome.connector_txn_id
    # And the order read without the request (its notes say the capture method).
    assert (await connector.retrieve(outcome.connector_txn_id, request.payment_id)).kind is OutcomeKind.REQUIRES_ACTION


def test_webhook_verification_with_a_real_dashboard_secret():
    secret = os.environ.get("PAYCAST_LIVE_RAZORPAY_WEBHOOK_SECRET")
    body_file = os.environ.get("PAYCAST_LIVE_RAZORPAY_WEBHOOK_BODY_FILE")
    signature = os.environ.get("PAYCAST_LIVE_RAZORPAY_WEBHOOK_SIGNATURE")
    if not (secret and body_file and signature):
        pytest.skip("PAYCAST_LIVE_RAZORPAY_WEBHOOK_SECRET/_BODY_FILE/_SIGNATURE not set")
    raw = pathlib.Path(body_file).read_bytes()
    razorpay_events.verify(secret, raw, {"X-Razorpay-Signature": signature})
    event = razorpay_events.parse(raw, {})
    assert event.connector == "razorpay"
    assert event.event_type
