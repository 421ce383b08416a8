"""API representations of stored rows (plain dicts in, plain dicts out).

Used both for HTTP responses and for event snapshots, so an event's
``data.object`` is exactly what ``GET`` would have shown at that moment.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-11-22T04:13:48.123Z``."""
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def public_payment_method(stored: Mapping) -> dict:
    """What a client may see of a payment method: never more than the last 4 digits
    (and a card token, which is no secret: it works only with the merchant's key)."""
    out: dict = {"type": stored.get("type")}
    if stored.get("token"):
        out["token"] = stored["token"]
    card = stored.get("card")
    if card:
        out["card"] = {"brand": card.get("brand"), "last4": card.get("last4")}
    if stored.get("upi"):
        out["upi"] = {"vpa": stored["upi"].get("vpa")}
    return out


def attempt(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "object": "payment_attempt",
        "connector": row["connector"],
        "status": row["status"],
        "connector_txn_id": row["connector_txn_id"],
        "error_code": row["error_code"],
        "created_at": iso(row["created_at"]),
    }


def payment(row: Mapping, attempts: Iterable[Mapping] = ()) -> dict:
    return {
        "id": row["id"],
        "object": "payment",
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "capture_method": row["capture_method"],
        "amount_capturable": row["amount_capturable"],
        "amount_received": row["amount_received"],
        "amount_refunded": row["amount_refunded"],
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "connector": row["connector"],
        "payment_method": public_payment_method(row["payment_method"]),
        "last_error": row["last_error"],
        "review_required": row["review_required"],
        # v1.2; .get: rows built in memory before a settle may lack them.
        "next_action": row.get("next_action") if row["status"] == "requires_action" else None,
        "cancellation_reason": row.get("cancellation_reason"),
        "metadata": row["metadata"],
        "attempts": [attempt(a) for a in attempts],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def order(row: Mapping, payment_ids: Iterable[str] = ()) -> dict:
    return {
        "id": row["id"],
        "object": "order",
        "amount": row["amount"],
        "currency": row["currency"],
        "customer_id": row["customer_id"],
        "status": row["status"],
        "payment_ids": list(payment_ids),
        "metadata": row["metadata"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def event(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "object": "event",
        "type": row["type"],
        "seq": row["seq"],
        "created_at": iso(row["created_at"]),
        "data": {"object": row["data"]},
    }


def merchant(row: Mapping) -> dict:
    return {"id": row["id"], "object": "merchant", "name": row["name"], "created_at": iso(row["created_at"])}


def page(items: list[dict], has_more: bool) -> dict:
    """The list envelope of the contract (docs/api.md)."""
    return {"object": "list", "data": items, "has_more": has_more}


def refund(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "object": "refund",
        "payment_id": row["payment_id"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "review_required": row.get("review_required", False),
        "reason": row["reason"],
        "failure_reason": row["failure_code"],
        "connector": row["connector"],
        "metadata": row["metadata"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def dispute(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "object": "dispute",
        "payment_id": row["payment_id"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "connector": row["connector"],
        "evidence": {"text": row["evidence"], "submitted_at": iso(row["evidence_submitted_at"])},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def account(row: Mapping, balance: int, available_balance: int) -> dict:
    return {
        "id": row["id"],
        "object": "account",
        "customer_id": row["customer_id"],
        "currency": row["currency"],
        "balance": balance,
        "available_balance": available_balance,
        "metadata": row["metadata"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def account_transaction(row: Mapping, customer_id: str | None) -> dict:
    return {
        "id": row["id"],
        "object": "transaction",
        "account_id": row["account_id"],
        "customer_id": customer_id,
        "type": row["type"],
        "status": row["status"],
        "amount": row["amount"],
        "currency": row["currency"],
        "payment_id": row["payment_id"],
        "connector": row["connector"],
        "failure_code": row["failure_code"],
        "review_required": row.get("review_required", False),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def webhook_endpoint(row: Mapping) -> dict:
    """An endpoint's API form; never its secret (stored sealed, shown once at creation)."""
    return {
        "id": row["id"],
        "object": "webhook_endpoint",
        "url": row["url"],
        "enabled_events": list(row["enabled_events"]),
        "description": row["description"],
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def webhook_attempt(row: Mapping) -> dict:
    return {
        "attempt": row["attempt"],
        "status_code": row["status_code"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "created_at": iso(row["created_at"]),
    }


def webhook_delivery(row: Mapping, attempts: Iterable[Mapping] = ()) -> dict:
    return {
        "id": row["id"],
        "object": "webhook_delivery",
        "endpoint_id": row["endpoint_id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "attempt_count": row["attempt_count"],
        "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "delivered_at": iso(row["delivered_at"]),
        "attempts": [webhook_attempt(a) for a in attempts],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def inbox_item(row: Mapping) -> dict:
    """An inbox row in its API form (docs/api.md "Incoming webhook inbox")."""
    try:
        raw = json.loads(row["raw_body"])
    except (TypeError, ValueError):
        raw = {}
    event_type = (raw.get("type") or raw.get("event")) if isinstance(raw, dict) else None
    return {
        "id": row["id"], "object": "inbox_item", "connector": row["connector"], "event_id": row["event_id"],
        "event_type": event_type if isinstance(event_type, str) else row["kind"],
        "kind": row["kind"], "status": row["status"], "attempts": row["tries"], "failures": row["failures"],
        "last_error": row["last_error"], "payment_id": row["payment_id"],
        "received_at": iso(row["received_at"]), "processed_at": iso(row["processed_at"]),
        "next_attempt_at": iso(row["claimed_until"]) if row["processed_at"] is None else None,
    }
