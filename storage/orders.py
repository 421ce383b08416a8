"""Orders: created by merchants, moved by their payments."""

from __future__ import annotations

import asyncpg

from domain import render
from domain.errors import NotFound
from domain.events import NewEvent, order_event
from domain.ids import new_id
from domain.orders import order_status_after_payment
from storage.pagination import page_rows


async def create(conn: asyncpg.Connection, merchant_id: str, amount: int, currency: str,
                 customer_id: str | None, metadata: dict) -> dict:
    row = await conn.fetchrow(
        "INSERT INTO orders (id, merchant_id, amount, currency, customer_id, status, metadata)"
        " VALUES ($1, $2, $3, $4, $5, 'created', $6) RETURNING *",
        new_id("ord"), merchant_id, amount, currency, customer_id, metadata,
    )
    return render.order(row)


async def _payment_ids(conn: asyncpg.Connection, order_id: str) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM payments WHERE order_id = $1 ORDER BY id", order_id)]


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, order_id: str, *, lock: bool = False):
    """The order row, or raise :class:`NotFound` (also for another merchant's order)."""
    sql = "SELECT * FROM orders WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, order_id, merchant_id)
    if row is None:
        raise NotFound(f"No such order: '{order_id}'", param="id")
    return row


async def get(conn: asyncpg.Connection, merchant_id: str, order_id: str) -> dict:
    row = await fetch_row(conn, merchant_id, order_id)
    return render.order(row, await _payment_ids(conn, order_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    status: str | None = None, customer_id: str | None = None) -> tuple[list[dict], bool]:
    rows, more = await page_rows(conn, "orders", merchant_id, limit=limit, starting_after=starting_after,
                                 filters={"status": status, "customer_id": customer_id})
    ids = [r["id"] for r in rows]
    by_order: dict[str, list[str]] = {i: [] for i in ids}
    for r in await conn.fetch("SELECT id, order_id FROM payments WHERE order_id = ANY($1) ORDER BY id", ids):
        by_order[r["order_id"]].append(r["id"])
    return [render.order(r, by_order[r["id"]]) for r in rows], more


async def follow_payment(conn: asyncpg.Connection, merchant_id: str, order_id: str,
                         payment_status: str) -> NewEvent | None:
    """Move the order after one of its payments reached ``payment_status``.

    Returns:
      The order's event to append, or ``None`` if the order did not change.
    """
    row = await fetch_row(conn, merchant_id, order_id, lock=True)
    new_status = order_status_after_payment(row["status"], payment_status)
    if new_status is None:
        return None
    row = await conn.fetchrow(
        "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 RETURNING *", order_id, new_status
    )
    return order_event(new_status, render.order(row, await _payment_ids(conn, order_id)))
