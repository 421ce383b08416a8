"""A payment and everything that happened to it, in time order; and search
(the console's payment page and search box).

Scoped to one merchant: the payment is looked up with its merchant first, and
everything else is reached from that payment (its attempts, its events and
their deliveries, its refunds and disputes, the gateway webhooks about it).
"""

from __future__ import annotations

import datetime as dt
import json

import asyncpg

from domain import render
from storage.payments import fetch_row

# What a search term is compared with, in the order results explain themselves.
SEARCH_FIELDS = ("payment_id", "order_id", "customer_id", "connector_txn_id", "refund_id", "dispute_id")


def _attempt(row) -> dict:
    """An attempt with what the console needs beyond the payment object's form."""
    return {**render.attempt(row), "latency_ms": row["latency_ms"], "updated_at": render.iso(row["updated_at"])}


def _event(row) -> dict:
    """An event without its snapshot (``GET /v1/events/{id}`` has it)."""
    return {"id": row["id"], "object": "event", "type": row["type"], "seq": row["seq"], "object_id": row["object_id"],
            "created_at": render.iso(row["created_at"])}


def _gateway_type(raw_body: str) -> str | None:
    """The gateway's own event type from a stored raw webhook (Stripe ``type``, Razorpay ``event``)."""
    try:
        body = json.loads(raw_body)
    except ValueError:
        return None
    kind = body.get("type", body.get("event")) if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


def inbox_item(row) -> dict:
    """A stored gateway webhook in the inbox-item form of docs/api.md (without its raw body)."""
    return {
        "id": row["id"], "object": "inbox_item", "connector": row["connector"], "event_id": row["event_id"],
        "event_type": _gateway_type(row["raw_body"]) or row["kind"], "kind": row["kind"], "status": row["status"],
        "attempts": row["tries"], "last_error": row["last_error"], "payment_id": row["payment_id"],
        "received_at": render.iso(row["received_at"]), "processed_at": render.iso(row["processed_at"]),
    }


async def timeline(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> dict:
    """The payment with its attempts, events, gateway webhooks in, outgoing deliveries, refunds
    and disputes, each list in time order, plus ``entries``: all of them merged by time.

    Raises:
      NotFound: no such payment for this merchant.
    """
    row = await fetch_row(conn, merchant_id, payment_id)
    attempts = await conn.fetch("SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY created_at, id",
                                payment_id)
    refunds = await conn.fetch("SELECT * FROM refunds WHERE merchant_id = $1 AND payment_id = $2 ORDER BY id",
                               merchant_id, payment_id)
    disputes = await conn.fetch("SELECT * FROM disputes WHERE merchant_id = $1 AND payment_id = $2 ORDER BY id",
                                merchant_id, payment_id)
    object_ids = [payment_id, *(r["id"] for r in refunds), *(d["id"] for d in disputes)]
    events = await conn.fetch("SELECT id, type, seq, object_id, created_at FROM events"
                              " WHERE merchant_id = $1 AND object_id = ANY($2::text[]) ORDER BY seq",
                              merchant_id, object_ids)
    deliveries = await conn.fetch("SELECT * FROM webhook_deliveries WHERE merchant_id = $1"
                                  " AND event_id = ANY($2::text[]) ORDER BY created_at, id",
                                  merchant_id, [e["id"] for e in events])
    delivery_attempts: dict[str, list] = {d["id"]: [] for d in deliveries}
    if deliveries:
        for a in await conn.fetch("SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY id",
                                  list(delivery_attempts)):
            delivery_attempts[a["delivery_id"]].append(a)
    txns = [(a["connector"], a["connector_txn_id"]) for a in attempts if a["connector_txn_id"]]
    inbox = await conn.fetch(
        "SELECT * FROM webhook_inbox WHERE payment_id = $1"
        " OR (connector, connector_txn_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))"
        " ORDER BY received_at, id",
        payment_id, [c for c, _ in txns], [t for _, t in txns],
    )
    entries: list[tuple[dt.datetime, int, str, dict]] = []
    # The tie-break rank keeps causes before effects at equal timestamps.
    entries += [(a["created_at"], 0, "attempt", _attempt(a)) for a in attempts]
    entries += [(i["received_at"], 1, "webhook_in", inbox_item(i)) for i in inbox]
    entries += [(r["created_at"], 2, "refund", render.refund(r)) for r in refunds]
    entries += [(d["created_at"], 2, "dispute", render.dispute(d)) for d in disputes]
    entries += [(e["created_at"], 3, "event", _event(e)) for e in events]
    entries += [(d["created_at"], 4, "delivery", render.webhook_delivery(d, delivery_attempts[d["id"]]))
                for d in deliveries]
    entries.sort(key=lambda e: (e[0], e[1]))
    attempt_rows = sorted(attempts, key=lambda a: a["id"])
    return {
        "object": "payment_timeline",
        "payment": render.payment(row, attempt_rows),
        "entries": [{"at": render.iso(at), "type": kind, "data": data} for at, _, kind, data in entries],
    }


async def search(conn: asyncpg.Connection, merchant_id: str, term: str, limit: int) -> list[dict]:
    """Payments a term names: by payment, order, customer, connector transaction, refund or dispute id.

    Exact matches only, each through an index that leads with the merchant
    (migration 0025): every branch reads at most ``limit`` entries, newest
    first, so a customer with a million payments costs what one with ten
    does. Nothing fuzzy (no prefix or substring search).

    Returns:
      Up to ``limit`` payments, newest first, each with ``matched_on`` (one of
      :data:`SEARCH_FIELDS`; the first that matched).
    """
    rows = await conn.fetch(
        "SELECT DISTINCT ON (p.id) p.*, m.field AS matched_on, m.rank FROM ("
        "  (SELECT id AS payment_id, 'payment_id' AS field, 0 AS rank FROM payments"
        "   WHERE merchant_id = $1 AND id = $2)"
        "  UNION ALL (SELECT id, 'order_id', 1 FROM payments WHERE merchant_id = $1 AND order_id = $2"
        "   ORDER BY id DESC LIMIT $3)"
        "  UNION ALL (SELECT id, 'customer_id', 2 FROM payments WHERE merchant_id = $1 AND customer_id = $2"
        "   ORDER BY id DESC LIMIT $3)"
        "  UNION ALL (SELECT payment_id, 'connector_txn_id', 3 FROM payment_attempts"
        "   WHERE merchant_id = $1 AND connector_txn_id = $2 LIMIT $3)"
        "  UNION ALL (SELECT payment_id, 'refund_id', 4 FROM refunds WHERE merchant_id = $1 AND id = $2)"
        "  UNION ALL (SELECT payment_id, 'dispute_id', 5 FROM disputes WHERE merchant_id = $1 AND id = $2)"
        ") m JOIN payments p ON p.id = m.payment_id AND p.merchant_id = $1"
        " ORDER BY p.id DESC, m.rank LIMIT $3",
        merchant_id, term, limit,
    )
    by_payment: dict[str, list] = {r["id"]: [] for r in rows}
    if rows:
        for a in await conn.fetch("SELECT * FROM payment_attempts WHERE payment_id = ANY($1::text[]) ORDER BY id",
                                  list(by_payment)):
            by_payment[a["payment_id"]].append(a)
    return [{**render.payment(r, by_payment[r["id"]]), "matched_on": r["matched_on"]} for r in rows]
