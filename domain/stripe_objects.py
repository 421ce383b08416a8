"""Stripe's API objects, read and written as plain dicts: what the Stripe connector
sends (PaymentIntent and Refund parameters) and what it makes of the answers
(outcomes, next actions, card details, error classes). Pure functions, so every
documented shape can be tested without a server (tests/unit/test_stripe_objects.py).

Shapes follow Stripe's API reference (PaymentIntent, Refund, Dispute, errors):
``status`` of a PaymentIntent is one of ``requires_payment_method``,
``requires_confirmation``, ``requires_action``, ``processing``,
``requires_capture``, ``canceled``, ``succeeded``; an API error body is
``{"error": {"type", "code", "decline_code"?, "message", "param"?,
"payment_intent"?}}``.
"""

from __future__ import annotations

import enum

from domain.payments import Outcome, OutcomeKind
from domain.submission import Submission

# Refund reasons Stripe accepts (anything else is our own text and is not sent).
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


def payment_intent_params(*, amount: int, currency: str, capture_method: str, token: str,
                          metadata: dict[str, str], return_url: str | None) -> dict:
    """The ``POST /v1/payment_intents`` parameters that create and confirm one charge.

    ``payment_method_types: ["card"]`` keeps the PaymentIntent off the
    dashboard's automatic payment methods, which (since API version
    2023-08-16) would demand a ``return_url`` for every confirmation; the
    payment method is a card token. ``return_url`` is sent only when the
    payer has one (a 3-D Secure redirect comes back to it).

    Args:
      amount: minor units.
      currency: ISO code, any case (Stripe wants lower case).
      capture_method: ``automatic`` or ``manual``.
      token: the PaymentMethod id (``pm_…``).
      metadata: string values only (Stripe's metadata rule).
      return_url: where a redirect comes back to, or None.

    Returns:
      The parameters, ``expand`` included (the card's brand and last 4).
    """
    params: dict = {
        "amount": amount,
        "currency": currency.lower(),
        "payment_method": token,
        "payment_method_types": ["card"],
        "confirm": True,
        "capture_method": "manual" if capture_method == "manual" else "automatic",
        "metadata": dict(metadata),
        "expand": ["payment_method"],
    }
    if return_url:
        params["return_url"] = return_url
    return params


def refund_params(*, payment_intent: str, amount: int, metadata: dict[str, str], reason: str | None) -> dict:
    """The ``POST /v1/refunds`` parameters; ``reason`` only when it is one Stripe knows."""
    params: dict = {"payment_intent": payment_intent, "amount": amount, "metadata": dict(metadata)}
    if reason in REFUND_REASONS:
        params["reason"] = reason
    return params


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def method_details(pi: dict) -> dict | None:
    """``{"brand", "last4"}`` of the card a PaymentIntent used, when its answer tells.

    Read from an expanded ``payment_method`` (``card.brand``/``card.last4``),
    else from an expanded ``latest_charge`` (``payment_method_details.card``).
    """
    card = _dict(_dict(pi.get("payment_method")).get("card"))
    if not card:
        card = _dict(_dict(_dict(pi.get("latest_charge")).get("payment_method_details")).get("card"))
    brand, last4 = _str(card.get("brand")), _str(card.get("last4"))
    if brand and last4:
        return {"brand": brand.lower(), "last4": last4}
    return None


def error_code(error: dict) -> str | None:
    """The most precise code of a Stripe error object: ``decline_code`` (the issuer's
    reason, e.g. ``insufficient_funds``) over ``code`` (``card_declined``)."""
    return _str(error.get("decline_code")) or _str(error.get("code"))


def next_action(pi: dict) -> dict:
    """The contract's ``next_action`` for a PaymentIntent in ``requires_action``.

    A ``redirect_to_url`` action (Stripe gives one when the confirmation carried
    a ``return_url``) is passed on as a redirect; any other action
    (``use_stripe_sdk``, …) is for Stripe.js: ``connector_sdk`` with the
    ``client_secret`` that ``stripe.handleNextAction`` takes.
    """
    action = _dict(pi.get("next_action"))
    redirect = _dict(action.get("redirect_to_url"))
    if action.get("type") == "redirect_to_url" and _str(redirect.get("url")):
        return {"type": "redirect_to_url",
                "redirect_to_url": {"url": redirect["url"], "return_url": _str(redirect.get("return_url"))}}
    return {"type": "connector_sdk",
            "connector_sdk": {"connector": "stripe", "data": {"client_secret": _str(pi.get("client_secret"))}}}


def outcome_of_payment_intent(pi: dict) -> Outcome:
    """What a PaymentIntent's ``status`` means for our attempt.

    ``requires_payment_method`` after a confirmation is a failure (a decline, or
    3-D Secure failed): ``last_payment_error`` says why. ``requires_confirmation``
    is never left by a create with ``confirm: true``; met on a retrieve it is
    ``unknown`` (reconciliation keeps asking, then flags for review).
    """
    txn = _str(pi.get("id"))
    status = pi.get("status")
    details = method_details(pi)
    if status == "succeeded":
        return Outcome(OutcomeKind.SUCCEEDED, txn, method_details=details)
    if status == "requires_capture":
        return Outcome(OutcomeKind.AUTHORIZED, txn, method_details=details)
    if status == "processing":
        return Outcome(OutcomeKind.PENDING, txn, method_details=details)
    if status == "requires_action":
        return Outcome(OutcomeKind.REQUIRES_ACTION, txn, next_action=next_action(pi), method_details=details)
    if status == "canceled":
        reason = _str(pi.get("cancellation_reason"))
        return Outcome(OutcomeKind.CANCELED, txn, reason, "The payment was canceled at Stripe.", method_details=details)
    if status == "requires_payment_method":
        error = _dict(pi.get("last_payment_error"))
        return Outcome(OutcomeKind.DECLINED, txn, error_code(error) or "payment_method_required",
                       _str(error.get("message")) or "The payment method was not accepted.", method_details=details)
    return Outcome(OutcomeKind.UNKNOWN, txn, None, f"Stripe PaymentIntent status {status!r}.", method_details=details)


class ErrorClass(enum.Enum):
    """What a Stripe API error means for the money (how the connector raises it)."""

    DECLINED = "declined"                # 402 card error: a definite no, an Outcome
    CREDENTIALS = "credentials"          # 401/403: refused before processing
    REFUSED = "refused"                  # 400/404 validation: refused before processing
    RATE_LIMITED = "rate_limited"        # 429 (and the old 400 code rate_limit): not processed
    IDEMPOTENCY = "idempotency"          # key reused with other parameters, or in use: an earlier call exists
    SERVER = "server"                    # 5xx: Stripe's outcome is unknown (it may have processed)
    UNKNOWN = "unknown"                  # anything else


def classify_error(http_status: int | None, error: dict) -> ErrorClass:
    """Sort a Stripe error answer by what it guarantees.

    Stripe documents that a request refused on validation, authentication or
    rate limiting never started executing (no idempotent result is saved for
    it), so nothing was charged; a 5xx may hide a completed request (Stripe
    saves 500 results under the idempotency key), and a 409 / ``idempotency_error``
    means another request with the same key exists or is running: both are
    unknown outcomes.
    """
    etype = error.get("type")
    if etype == "idempotency_error" or http_status == 409:
        return ErrorClass.IDEMPOTENCY
    if http_status == 402 or etype == "card_error":
        return ErrorClass.DECLINED
    if http_status in (401, 403):
        return ErrorClass.CREDENTIALS
    if http_status == 429 or error.get("code") == "rate_limit":
        return ErrorClass.RATE_LIMITED
    if http_status in (400, 404):
        return ErrorClass.REFUSED
    if http_status is not None and http_status >= 500:
        return ErrorClass.SERVER
    return ErrorClass.UNKNOWN


def declined_outcome(error: dict) -> Outcome:
    """The outcome of a 402 (or of a 400 that names the PaymentIntent it left
    unpaid): a decline with the issuer's code; the PaymentIntent's id when the
    error carries it (Stripe's errors on a confirmation do; localstripe's do not)."""
    pi = _dict(error.get("payment_intent"))
    last = _dict(pi.get("last_payment_error"))
    code = error_code(error) or error_code(last) or "card_declined"
    message = _str(error.get("message")) or _str(last.get("message")) or "The card was declined."
    # The error's own ``payment_method`` is the whole object (with its card); the
    # PaymentIntent's is usually only its id.
    details = method_details(pi) or method_details({"payment_method": error.get("payment_method")})
    return Outcome(OutcomeKind.DECLINED, _str(pi.get("id")), code, message, method_details=details)


def refund_submission(refund: dict) -> Submission:
    """A Stripe Refund's ``status`` as our :class:`Submission`.

    ``succeeded`` and ``failed``/``canceled`` are decided; ``pending`` and
    ``requires_action`` (the customer must give bank details) wait for a
    ``refund.updated`` webhook.
    """
    status = refund.get("status")
    reference = _str(refund.get("id"))
    if status == "succeeded":
        return Submission("succeeded", reference)
    if status in ("failed", "canceled"):
        return Submission("failed", reference, _str(refund.get("failure_reason")) or f"refund_{status}")
    return Submission("pending", reference)


def refund_with_metadata(refunds: list, key: str, value: str) -> dict | None:
    """The refund of a list whose ``metadata[key]`` is ``value`` (our refund id), or None."""
    for refund in refunds:
        if isinstance(refund, dict) and _dict(refund.get("metadata")).get(key) == value:
            return refund
    return None
