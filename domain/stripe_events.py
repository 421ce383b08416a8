"""Stripe's webhook events for one connector account (``POST /webhooks/stripe/{mca_id}``):
verify the ``Stripe-Signature`` and map each event to a :class:`GatewayEvent`. Pure.

Event objects follow Stripe's API reference: ``{"id": "evt_…", "type",
"created", "data": {"object": {...}}}`` where the object is a PaymentIntent
(``payment_intent.*``), a Charge (``charge.refunded``), a Refund
(``refund.updated``, ``charge.refund.updated``) or a Dispute
(``charge.dispute.*``). Types the contract (docs/api.md v1.2) does not apply are
kind ``ignored``: stored, never applied.
"""

from __future__ import annotations

from collections.abc import Callable

from domain import stripe_objects
from domain.errors import InvalidRequest
from domain.signatures import verify_stripe
from domain.webhooks import GatewayEvent, load_object

CONNECTOR = "stripe"
# PaymentIntent events → our kinds.
PAYMENT_INTENT_TYPES = {
    "payment_intent.succeeded": "payment.succeeded",
    "payment_intent.amount_capturable_updated": "payment.authorized",
    "payment_intent.payment_failed": "payment.failed",
    "payment_intent.canceled": "payment.canceled",
    "payment_intent.requires_action": "payment.requires_action",
}
REFUND_TYPES = frozenset({"refund.updated", "charge.refund.updated"})
DISPUTE_TYPES = frozenset({"charge.dispute.created", "charge.dispute.closed"})
# Every type that is applied; any other is ``ignored``.
APPLIED_TYPES = frozenset(PAYMENT_INTENT_TYPES) | REFUND_TYPES | DISPUTE_TYPES | {"charge.refunded"}


def verify(secret: str, raw: bytes, headers, now: int) -> None:
    """Check the ``Stripe-Signature`` header of a body (300 s tolerance).

    Args:
      secret: the account's webhook signing secret (``whsec_…``).
      raw: the body exactly as received.
      headers: anything with ``.get(name)``.
      now: the current Unix time.

    Raises:
      SignatureError: missing, malformed or wrong.
      StaleSignature: signed more than 300 s away from ``now``.
    """
    verify_stripe(secret, raw, headers.get("Stripe-Signature"), now)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _id_of(value: object) -> str | None:
    """An id from a field that is either the id or the expanded object."""
    return _text(value) or _text(_object(value).get("id"))


def _load(raw: bytes) -> dict:
    """The event object of a body.

    Raises:
      InvalidRequest: not a JSON object, NUL characters, or ``id``/``type``/``created``/``data.object`` missing.
    """
    event = load_object(raw)
    for field, valid in (("id", _text(event.get("id"))), ("type", _text(event.get("type"))),
                         ("created", _int(event.get("created")) is not None),
                         ("data.object", isinstance(_object(event.get("data")).get("object"), dict))):
        if not valid:
            raise InvalidRequest(f"Webhook field {field} is missing or invalid.", param=field)
    return event


def _fields(obj: dict) -> dict:
    """What every kind reads the same way from its object."""
    currency = _text(obj.get("currency"))
    metadata = _object(obj.get("metadata"))
    return {"amount": _int(obj.get("amount")), "currency": currency.upper() if currency else None,
            "status": _text(obj.get("status")),
            "payment_id": metadata.get("payment_id") if isinstance(metadata.get("payment_id"), str) else None}


def _payment(kind: str, pi: dict) -> dict:
    txn = _text(pi.get("id"))
    error = _object(pi.get("last_payment_error"))
    fields = {"kind": kind, "connector_txn_id": txn, "payment_txn_id": txn,
              "method_details": stripe_objects.method_details(pi)}
    if kind == "payment.failed":
        fields |= {"error_code": stripe_objects.error_code(error), "message": _text(error.get("message"))}
    if kind == "payment.canceled":
        fields["message"] = _text(pi.get("cancellation_reason"))
    return fields


def _refund(refund: dict) -> dict:
    status = refund.get("status")
    kind = {"succeeded": "refund.succeeded", "failed": "refund.failed", "canceled": "refund.failed"}.get(status,
                                                                                                        "ignored")
    object_id = _object(refund.get("metadata")).get("refund_id")
    return {"kind": kind, "connector_txn_id": _text(refund.get("id")),
            "payment_txn_id": _id_of(refund.get("payment_intent")),
            "object_id": object_id if isinstance(object_id, str) else None,
            "error_code": _text(refund.get("failure_reason"))}


def _charge_refunded(charge: dict) -> tuple[dict, dict]:
    """``charge.refunded``: the charge's newest refund when the event carries its
    refunds (API versions before 2022-11-15 do); without them there is nothing
    precise to apply (``refund.updated`` says it), so it is ignored."""
    refunds = [r for r in _object(charge.get("refunds")).get("data") or [] if isinstance(r, dict)]
    if not refunds:
        return {"kind": "ignored", "connector_txn_id": _text(charge.get("id")),
                "payment_txn_id": _id_of(charge.get("payment_intent"))}, charge
    newest = max(refunds, key=lambda r: _int(r.get("created")) or 0)
    fields = _refund(newest)
    fields["payment_txn_id"] = fields["payment_txn_id"] or _id_of(charge.get("payment_intent"))
    return fields, newest


def _dispute(etype: str, dispute: dict) -> dict:
    status = dispute.get("status")
    if etype == "charge.dispute.created":
        kind = "dispute.opened"
    else:
        kind = {"won": "dispute.won", "lost": "dispute.lost"}.get(status, "ignored")
    object_id = _object(dispute.get("metadata")).get("dispute_id")
    return {"kind": kind, "connector_txn_id": _text(dispute.get("id")),
            "payment_txn_id": _id_of(dispute.get("payment_intent")),
            "object_id": object_id if isinstance(object_id, str) else None}


_BY_TYPE: dict[str, Callable[[str, dict], tuple[dict, dict]]] = {
    **{t: (lambda etype, obj: (_payment(PAYMENT_INTENT_TYPES[etype], obj), obj)) for t in PAYMENT_INTENT_TYPES},
    **{t: (lambda etype, obj: (_refund(obj), obj)) for t in REFUND_TYPES},
    **{t: (lambda etype, obj: (_dispute(etype, obj), obj)) for t in DISPUTE_TYPES},
    "charge.refunded": lambda etype, obj: _charge_refunded(obj),
}


def parse(raw: bytes, headers=None, *, account_id: str | None = None) -> GatewayEvent:
    """Map a (verified) Stripe event body to a :class:`GatewayEvent`.

    Args:
      raw: the body.
      headers: unused (Stripe's event id is in the body); kept so every
        connector's parser is called alike.
      account_id: the connector account whose path received it.

    Returns:
      The event: ``connector_txn_id`` is the object's Stripe id (``pi_…``,
      ``re_…``, ``du_…``), ``payment_txn_id`` the PaymentIntent it belongs to,
      ``object_id`` our own refund/dispute id from metadata when present,
      ``event_type`` Stripe's type; kind ``ignored`` for any type not applied.

    Raises:
      InvalidRequest: a body that is not a Stripe event (``param`` names the field).
    """
    event = _load(raw)
    etype = event["type"]
    obj = event["data"]["object"]
    mapper = _BY_TYPE.get(etype)
    if mapper is None:
        fields, source = {"kind": "ignored", "connector_txn_id": _text(obj.get("id"))}, obj
    else:
        fields, source = mapper(etype, obj)
    common = _fields(source)
    if fields.get("connector_txn_id") is None:
        if fields["kind"] != "ignored":
            raise InvalidRequest("Webhook field data.object.id is missing or invalid.", param="data.object.id")
        fields["connector_txn_id"] = event["id"]
    return GatewayEvent(
        connector=CONNECTOR, event_id=event["id"][:255], kind=fields["kind"],
        connector_txn_id=fields["connector_txn_id"][:255], payment_id=common["payment_id"],
        amount=common["amount"], currency=common["currency"], status=common["status"], created=event["created"],
        object_id=fields.get("object_id"), account_id=account_id, payment_txn_id=fields.get("payment_txn_id"),
        error_code=fields.get("error_code"), message=fields.get("message"), event_type=etype[:255],
        method_details=fields.get("method_details"))
