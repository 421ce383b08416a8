"""API representations of stored rows (plain dicts in, plain dicts out).

Used both for HTTP responses and for event snapshots, so an event's
``data.object`` is exactly what ``GET`` would have shown at that moment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-11-22T04:13:48.123Z``."""
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def public_payment_method(stored: Mapping) -> dict:
    """What a client may see of a payment method: never more than the last 4 digits."""
    out: dict = {"type": stored.get("type")}
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
    """The list envelope of API.md."""
    return {"object": "list", "data": items, "has_more": has_more}
