"""Merchants' outgoing webhook endpoints. The ``secret`` column holds the sealed form
(storage.secrets_box); the component seals and the dispatcher opens it."""

from __future__ import annotations

import asyncpg

from domain import render
from domain.errors import NotFound


async def create(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, url: str, enabled_events: list[str],
                 description: str | None, sealed_secret: str) -> asyncpg.Record:
    """Create an enabled endpoint whose secret is already sealed (storage.secrets_box).

    Returns:
      Its row (the caller renders it with the plaintext secret it made, shown at
      creation only, as Stripe does).
    """
    return await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, enabled_events, description, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'enabled') RETURNING *",
        endpoint_id, merchant_id, url, sealed_secret, enabled_events, description,
    )


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, *, lock: bool = False):
    """The (not deleted) endpoint row, or raise :class:`NotFound`."""
    sql = ("SELECT * FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
           + (" FOR UPDATE" if lock else ""))
    row = await conn.fetchrow(sql, endpoint_id, merchant_id)
    if row is None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'", param="id")
    return row


async def get(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> dict:
    return render.webhook_endpoint(await fetch_row(conn, merchant_id, endpoint_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int,
                    starting_after: str | None) -> tuple[list[dict], bool]:
    rows = await conn.fetch(
        "SELECT * FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
        " AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3", merchant_id, starting_after, limit + 1,
    )
    return [render.webhook_endpoint(r) for r in rows[:limit]], len(rows) > limit


async def delete(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> dict:
    """Delete an endpoint; its deliveries still waiting are canceled.

    Returns:
      ``{"id", "object", "deleted": true}`` (Stripe's form).
    """
    await fetch_row(conn, merchant_id, endpoint_id, lock=True)
    await conn.execute("UPDATE webhook_endpoints SET deleted_at = now(), updated_at = now() WHERE id = $1",
                       endpoint_id)
    await cancel_pending(conn, endpoint_id, "endpoint deleted")
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


async def disable(conn: asyncpg.Connection, endpoint_id: str, reason: str) -> None:
    """Stop sending to an endpoint (it answered 410 Gone)."""
    await conn.execute(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND status = 'enabled'", endpoint_id, reason,
    )
    await cancel_pending(conn, endpoint_id, f"endpoint disabled: {reason}")


async def cancel_pending(conn: asyncpg.Connection, endpoint_id: str, why: str) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'canceled', last_error = $2, claimed_until = NULL,"
        " claim_token = NULL, updated_at = now() WHERE endpoint_id = $1 AND status = 'pending'", endpoint_id, why,
    )
