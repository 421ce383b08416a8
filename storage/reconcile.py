"""Reconciliation of payments stuck in ``processing`` past their deadline."""

from __future__ import annotations

import asyncpg

from storage import payments


async def claim_due(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[dict]:
    """Lease due payments by pushing their deadline forward (so no one else takes them)."""
    rows = await conn.fetch(
        "UPDATE payments SET processing_deadline = now() + make_interval(secs => $2)"
        " WHERE id IN (SELECT id FROM payments WHERE status = 'processing' AND processing_deadline < now()"
        "   ORDER BY processing_deadline LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, merchant_id",
        limit, lease_s,
    )
    return [dict(r) for r in rows]


async def claim_abandoned(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[dict]:
    """Lease payments left in ``requires_action`` past their action deadline
    (``PAYCAST_ACTION_DEADLINE_S``) by pushing the deadline forward; ``updated_at``
    is not touched, so the lease never fails the guard of what the actor then writes."""
    rows = await conn.fetch(
        "UPDATE payments SET action_deadline = now() + make_interval(secs => $2)"
        " WHERE id IN (SELECT id FROM payments WHERE status = 'requires_action' AND action_deadline < now()"
        "   ORDER BY action_deadline LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, merchant_id",
        limit, lease_s,
    )
    return [dict(r) for r in rows]


async def open_attempt(conn: asyncpg.Connection, payment_id: str, in_flight_s: float):
    """The latest attempt whose outcome is still open (``started``/``unknown``), if any.

    Returns:
      The attempt's ``id``, ``connector``, ``connector_txn_id``,
      ``connector_account_id``, ``in_flight`` and its ``payment`` (the row as
      JSON, to rebuild the attempt's request), or None.

    Args:
      in_flight_s: how long a connector call may still be running (the
        connector timeout and a margin). A ``started`` attempt younger than this
        with no connector transaction id yet is marked ``in_flight``: its call
        may not have reached the connector yet, so "not found" would prove nothing.
    """
    return await conn.fetchrow(
        "SELECT a.id, a.connector, a.connector_txn_id, a.connector_account_id, to_jsonb(p) AS payment,"
        " (a.status = 'started' AND a.connector_txn_id IS NULL"
        "  AND a.created_at > now() - make_interval(secs => $2)) AS in_flight"
        " FROM payment_attempts a JOIN payments p ON p.id = a.payment_id WHERE a.payment_id = $1"
        " AND a.status IN ('started', 'unknown') ORDER BY a.id DESC LIMIT 1", payment_id, in_flight_s,
    )


async def record_check(conn: asyncpg.Connection, payment_id: str, max_checks: int, base_s: float) -> dict:
    """Count an inconclusive check; at ``max_checks`` flag the payment for review (once).

    The next check comes after ``base_s * 2**checks`` seconds (at most an hour):
    a connector that does not know yet is asked less and less often.

    Returns:
      ``{"checks", "review_required"}`` after the update.
    """
    row = await conn.fetchrow(
        "UPDATE payments SET reconcile_checks = reconcile_checks + 1,"
        " processing_deadline = CASE WHEN reconcile_checks + 1 >= $2 THEN NULL"
        "   ELSE now() + make_interval(secs => LEAST(3600, $3 * power(2, reconcile_checks))) END"
        " WHERE id = $1 AND status = 'processing' RETURNING *", payment_id, max_checks, base_s,
    )
    if row is None:
        return {"checks": None, "review_required": False}
    if row["reconcile_checks"] >= max_checks and not row["review_required"]:
        await payments.flag_for_review(conn, payment_id)
        return {"checks": row["reconcile_checks"], "review_required": True}
    return {"checks": row["reconcile_checks"], "review_required": row["review_required"]}
