"""Razorpay webhooks to one normalised :class:`~domain.webhooks.GatewayEvent`. Pure.

Razorpay signs the raw body: ``X-Razorpay-Signature`` is the lowercase hex
HMAC-SHA256 of the exact bytes received, keyed with the webhook secret the
merchant typed in the Razorpay dashboard. There is no timestamp in the
signature, so a replay cannot be told apart by the signature alone: the
``x-razorpay-event-id`` header (one id per event, the same on every
redelivery) is the deduplication key.

Every Razorpay event carries ``{"entity": "event", "event": <type>,
"contains": [...], "payload": {"payment": {"entity": {...}}, "order": ...,
"refund": ..., "dispute": ...}, "created_at"}``. The attempt's
``connector_txn_id`` is the Razorpay ORDER (``order_…``), because one order
may see several payments (failed tries, then one that succeeds); so every
payment event is keyed on its payment's ``order_id`` and refund and dispute
events carry it as ``payment_txn_id``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from domain.errors import InvalidRequest
from domain.signatures import SignatureError, razorpay_header
from domain.webhooks import GatewayEvent, load_object

CONNECTOR = "razorpay"
SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"

# Razorpay event type → our kind (docs/api.md "Real connectors: payments (v1.2)"). Any other type is ``ignored``.
KINDS = {
    "payment.authorized": "payment.authorized",
    "payment.captured": "payment.succeeded",
    "order.paid": "payment.succeeded",
    "payment.failed": "payment.attempt_failed",  # the customer may try again in the same Checkout
    "refund.processed": "refund.succeeded",
    "refund.failed": "refund.failed",
    "payment.dispute.created": "dispute.opened",
    "payment.dispute.won": "dispute.won",
    "payment.dispute.lost": "dispute.lost",
}
# The payload entity that carries the event's own object, by our kind's prefix.
_SUBJECT = {"payment": "payment", "refund": "refund", "dispute": "dispute"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]``, whatever the case of the key (HTTP header names are case-insensitive)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def verify(secret: str, raw: bytes, headers: Mapping[str, str], now: int | None = None) -> None:
    """Check the ``X-Razorpay-Signature`` of a webhook.

    The comparison is exact and constant-time, the way Razorpay's own SDK
    (``Utility.verify_webhook_signature``) compares: no trimming, no case
    folding, so both accept the same headers.

    Args:
      secret: the account's webhook secret.
      raw: the body as received, before any parsing.
      headers: the request headers (any key case).
      now: unused (the signature has no timestamp); accepted so every
        connector's ``verify`` has one signature.

    Raises:
      SignatureError: the header is missing or does not match.
    """
    given = _header(headers, SIGNATURE_HEADER)
    if not given:
        raise SignatureError("Missing X-Razorpay-Signature header.")
    expected = razorpay_header(secret, raw)
    # compare_digest refuses non-ASCII str; compare bytes so any header value is just "no match".
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape")):
        raise SignatureError("The signature does not match the payload.")


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _entity(payload: dict, name: str) -> dict:
    return _object(_object(payload.get(name)).get("entity"))


def _text(value: object) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


def _amount(value: object) -> int | None:
    """A non-negative integer that fits the database's bigint columns, else None."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63
    return value if ok else None


def _notes(entity: dict) -> dict:
    # Razorpay sends empty notes as [] (a PHP quirk), filled ones as an object.
    return _object(entity.get("notes"))


def method_details(payment: dict) -> dict | None:
    """``{"brand", "last4"}`` of a Razorpay payment made by card, else None.

    Args:
      payment: a Razorpay payment entity (its ``card`` is present when expanded or in webhooks).
    """
    card = _object(payment.get("card"))
    network, last4 = _text(card.get("network")), _text(card.get("last4"))
    if payment.get("method") != "card" or not (network and last4):
        return None
    return {"brand": network.lower().replace(" ", "_"), "last4": last4}


def error_code(payment: dict) -> str | None:
    """A failed Razorpay payment's code: its ``error_reason`` (``payment_failed``,
    ``incorrect_otp``, …) when given, else its generic ``error_code`` (``BAD_REQUEST_ERROR``)."""
    return _text(payment.get("error_reason")) or _text(payment.get("error_code"))


def _event_id(raw: bytes, headers: Mapping[str, str]) -> str:
    """The header's event id; without one, a digest of the body (a redelivery of the
    same bytes is then still one event)."""
    given = _text(_header(headers, EVENT_ID_HEADER))
    return given or "sha256:" + hashlib.sha256(raw).hexdigest()


def parse(raw: bytes, headers: Mapping[str, str], *, account_id: str | None = None) -> GatewayEvent:
    """Normalise a Razorpay webhook (verify it first).

    Args:
      raw: the body as received.
      headers: the request headers (any key case); ``x-razorpay-event-id`` is the event id.
      account_id: the connector account whose path received it (``mca_…``).

    Returns:
      The event.

    Raises:
      InvalidRequest: not JSON, no ``event`` type, or a known type without the
        entity it needs (``param`` names the missing field).
    """
    data = load_object(raw)
    etype = _text(data.get("event"))
    if etype is None:
        raise InvalidRequest("Webhook field event is missing or invalid.", param="event")
    created = _amount(data.get("created_at")) or 0
    payload = _object(data.get("payload"))
    kind = KINDS.get(etype, "ignored")
    payment = _entity(payload, "payment")
    order = _entity(payload, "order")
    # The order the event belongs to: the payment's order, or the order entity itself (order.paid).
    order_id = _text(payment.get("order_id")) or _text(order.get("id"))
    subject = _entity(payload, _SUBJECT.get(kind.split(".")[0], "payment")) if kind != "ignored" else {}
    base = dict(connector=CONNECTOR, event_id=_event_id(raw, headers), kind=kind, created=int(created),
                event_type=etype, account_id=account_id)
    if kind == "ignored":
        some_id = order_id or next((_text(_entity(payload, k).get("id")) for k in payload), None)
        return GatewayEvent(**base, connector_txn_id=some_id or "", payment_id=None, amount=None, currency=None,
                            status=None)
    if kind.startswith("payment."):
        if order_id is None:
            raise InvalidRequest("Webhook field payload.payment.entity.order_id is missing or invalid.",
                                 param="payload.payment.entity.order_id")
        notes = _notes(payment) or _notes(order)
        failed = kind == "payment.attempt_failed"
        return GatewayEvent(
            **base, connector_txn_id=order_id,
            payment_id=_text(notes.get("payment_id")) or _text(order.get("receipt")),
            amount=_amount(payment.get("amount")) or _amount(order.get("amount")),
            currency=_currency(payment.get("currency") or order.get("currency")),
            status=_text(payment.get("status")) or _text(order.get("status")),
            payment_txn_id=order_id,
            error_code=error_code(payment) if failed else None,
            message=_text(payment.get("error_description")) if failed else None,
            method_details=method_details(payment))
    # refund.* and dispute.*: their own entity, tied to the payment's order.
    own_id = _text(subject.get("id"))
    if own_id is None:
        name = "refund" if kind.startswith("refund.") else "dispute"
        raise InvalidRequest(f"Webhook field payload.{name}.entity.id is missing or invalid.",
                             param=f"payload.{name}.entity.id")
    notes = _notes(subject)
    ours = (_text(notes.get("refund_id")) or _text(subject.get("receipt"))) if kind.startswith("refund.") else None
    return GatewayEvent(
        **base, connector_txn_id=own_id,
        payment_id=_text(_notes(payment).get("payment_id")) or _text(notes.get("payment_id")),
        amount=_amount(subject.get("amount")), currency=_currency(subject.get("currency")),
        status=_text(subject.get("status")), object_id=ours,
        payment_txn_id=order_id or _text(notes.get("razorpay_order_id")),
        error_code=_text(subject.get("reason_code")) if kind.startswith("dispute.") else None)


def _currency(value: object) -> str | None:
    return value.upper()[:3] if isinstance(value, str) and value else None
