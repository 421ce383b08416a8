"""Gateway webhook payloads: build them (simulators) and parse them (ingestion)
into one normalised :class:`GatewayEvent`. Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass

from domain.errors import InvalidRequest

# Normalised kinds, the same for every connector.
KINDS = frozenset({
    "payment.succeeded", "payment.failed", "refund.succeeded", "refund.failed",
    "dispute.opened", "dispute.won", "dispute.lost", "payout.paid", "payout.failed",
    # v1.2, from the real connectors:
    "payment.authorized",       # manual capture: the charge is held (Stripe amount_capturable_updated)
    "payment.requires_action",  # the customer must act (Stripe requires_action)
    "payment.canceled",         # canceled at the gateway
    "payment.attempt_failed",   # one try failed, the customer may try again in the same
                                # checkout (Razorpay payment.failed): recorded, status kept
    "ignored",                  # a type we do not apply: stored and marked ``ignored``
})

STRIPE_TYPES = {
    "payment_intent.succeeded": "payment.succeeded",
    "payment_intent.payment_failed": "payment.failed",
    "charge.refunded": "refund.succeeded",
    "charge.refund.failed": "refund.failed",
    "charge.dispute.created": "dispute.opened",
    "charge.dispute.closed": None,  # won or lost, from data.object.status
    "payout.paid": "payout.paid",
    "payout.failed": "payout.failed",
}
RAZORPAY_TYPES = {
    "payment.captured": "payment.succeeded",
    "payment.failed": "payment.failed",
    "refund.processed": "refund.succeeded",
    "refund.failed": "refund.failed",
    "payment.dispute.created": "dispute.opened",
    "payment.dispute.won": "dispute.won",
    "payment.dispute.lost": "dispute.lost",
    "payout.processed": "payout.paid",
    "payout.reversed": "payout.failed",
}
_STRIPE_BY_KIND = {v: k for k, v in STRIPE_TYPES.items() if v}
_RAZORPAY_BY_KIND = {v: k for k, v in RAZORPAY_TYPES.items()}
# Which payload format (and signature scheme) each connector speaks.
FORMATS = {"mockstripe": "stripe", "flaky": "stripe", "mockrazorpay": "razorpay"}


@dataclass(frozen=True)
class GatewayEvent:
    connector: str
    event_id: str
    kind: str
    connector_txn_id: str
    payment_id: str | None
    amount: int | None
    currency: str | None
    status: str | None
    created: int
    object_id: str | None = None  # refund/dispute/payout id in our namespace, from metadata
    # v1.2 (real connectors):
    account_id: str | None = None      # the connector account (``mca_…``) whose path received it
    payment_txn_id: str | None = None  # for refund/dispute events: the gateway's id of the payment
                                       # they belong to (matched against attempts' connector_txn_id)
    error_code: str | None = None      # payment.failed / attempt_failed: the gateway's code
    message: str | None = None
    event_type: str | None = None      # the gateway's own type name (``charge.dispute.closed``)
    method_details: dict | None = None  # {"brand", "last4"} when the gateway tells


def build(connector: str, kind: str, *, event_id: str, txn_id: str, amount: int, currency: str, created: int,
          metadata: dict[str, str], status: str | None = None) -> dict:
    """A webhook body as ``connector`` would send it."""
    if FORMATS[connector] == "stripe":
        stripe_type = _STRIPE_BY_KIND.get(kind, "charge.dispute.closed")
        if status is None:
            status = {"dispute.won": "won", "dispute.lost": "lost"}.get(kind, kind.split(".")[1])
        return {"id": event_id, "type": stripe_type, "created": created,
                "data": {"object": {"id": txn_id, "amount": amount, "currency": currency.lower(),
                                    "status": status, "metadata": metadata}}}
    return {"event": _RAZORPAY_BY_KIND[kind], "created_at": created, "x_event_id": event_id,
            "payload": {"payment": {"entity": {"id": txn_id, "amount": amount, "currency": currency,
                                               "status": status or kind.split(".")[1], "notes": metadata}}}}


def _require(value: object, name: str, kind: type) -> object:
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
        raise InvalidRequest(f"Webhook field {name} is missing or invalid.", param=name)
    return value


def load_object(body: bytes) -> dict:
    """The JSON object of a webhook body (every connector's parser starts here).

    Raises:
      InvalidRequest: NUL characters, not JSON, or not a JSON object.
    """
    if b"\x00" in body or b"\\u0000" in body:
        raise InvalidRequest("NUL characters are not allowed in the webhook body.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("Invalid JSON in the webhook body.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The webhook body must be a JSON object.")
    return data


def parse(connector: str, body: bytes) -> GatewayEvent:
    """Parse a webhook body sent by ``connector``.

    Raises:
      InvalidRequest: bad JSON, an unknown event type, or a missing field (``param`` names it).
    """
    data = load_object(body)
    if FORMATS[connector] == "stripe":
        event_id = _require(data.get("id"), "id", str)
        etype = _require(data.get("type"), "type", str)
        created = _require(data.get("created"), "created", int)
        obj = _require((data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None,
                       "data.object", dict)
        if etype not in STRIPE_TYPES:
            raise InvalidRequest(f"Unknown event type {etype!r}.", param="type")
        kind = STRIPE_TYPES[etype]
        if kind is None:
            kind = "dispute.won" if obj.get("status") == "won" else "dispute.lost"
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    else:
        event_id = _require(data.get("x_event_id"), "x_event_id", str)
        etype = _require(data.get("event"), "event", str)
        created = _require(data.get("created_at"), "created_at", int)
        payload = data.get("payload") if isinstance(data.get("payload"), dict) else {}
        payment = payload.get("payment") if isinstance(payload.get("payment"), dict) else {}
        obj = _require(payment.get("entity"), "payload.payment.entity", dict)
        if etype not in RAZORPAY_TYPES:
            raise InvalidRequest(f"Unknown event type {etype!r}.", param="event")
        kind = RAZORPAY_TYPES[etype]
        metadata = obj.get("notes") if isinstance(obj.get("notes"), dict) else {}
    txn = _require(obj.get("id"), "data.object.id", str)
    amount = obj.get("amount") if isinstance(obj.get("amount"), int) and not isinstance(obj.get("amount"), bool) else None
    currency = obj.get("currency").upper() if isinstance(obj.get("currency"), str) else None
    payment_id = metadata.get("payment_id") if isinstance(metadata.get("payment_id"), str) else None
    object_id = next((metadata[k] for k in ("refund_id", "dispute_id", "transaction_id")
                      if isinstance(metadata.get(k), str)), None)
    return GatewayEvent(connector, str(event_id)[:255], kind, str(txn)[:255], payment_id, amount, currency,
                        obj.get("status") if isinstance(obj.get("status"), str) else None, int(created), object_id)
