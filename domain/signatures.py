"""Webhook signature schemes, sans-IO: sign and verify with constant-time compares.

- ``stripe`` (mockstripe, flaky): ``Stripe-Signature: t=<unix>,v1=<hex>`` over
  ``"{t}.{body}"``; the whole secret string (``whsec_…``) is the key, as Stripe does.
- ``razorpay`` (mockrazorpay): ``X-Razorpay-Signature: <hex>`` over the body;
  freshness comes from the payload's ``created_at``.
- ``standard`` (outgoing, Standard Webhooks v1): ``v1,<base64>`` over
  ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded part after ``whsec_``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# the contract (docs/api.md): a Stripe-style signature older (or newer) than this is refused.
TOLERANCE_S = 300


class SignatureError(ValueError):
    """The signature is missing, malformed or wrong."""

    code = "invalid_signature"


class StaleSignature(SignatureError):
    """The signature is valid but its timestamp is outside the tolerance (a replay)."""

    code = "stale_signature"


def _hex_hmac(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def stripe_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Stripe-Signature`` value for ``body`` signed at ``timestamp``."""
    return f"t={timestamp},v1={_hex_hmac(secret, str(timestamp).encode() + b'.' + body)}"


def verify_stripe(secret: str, body: bytes, header: str | None, now: int, tolerance: int = TOLERANCE_S) -> int:
    """Check a ``Stripe-Signature`` header.

    Returns:
      The signed timestamp.

    Raises:
      SignatureError: missing/malformed header or no matching ``v1``.
      StaleSignature: timestamp outside ``tolerance`` seconds of ``now``.
    """
    if not header:
        raise SignatureError("Missing Stripe-Signature header.")
    timestamp = None
    candidates = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():  # "²".isdigit() is True, int("²") fails
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("Malformed Stripe-Signature header.")
    expected = _hex_hmac(secret, str(timestamp).encode() + b"." + body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("No signature matches the expected signature for the payload.")
    if abs(now - timestamp) > tolerance:
        raise StaleSignature("The signature timestamp is outside the tolerance.")
    return timestamp


def razorpay_header(secret: str, body: bytes) -> str:
    return _hex_hmac(secret, body)


def verify_razorpay(secret: str, body: bytes, header: str | None) -> None:
    """Check an ``X-Razorpay-Signature`` header.

    Raises:
      SignatureError: missing or wrong.
    """
    if not header:
        raise SignatureError("Missing X-Razorpay-Signature header.")
    if not hmac.compare_digest(_hex_hmac(secret, body), header.strip()):
        raise SignatureError("The signature does not match the payload.")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` value of Standard Webhooks v1 for an outgoing event."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()
