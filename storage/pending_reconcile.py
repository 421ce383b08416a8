"""Reconciliation of refunds and withdrawals (payouts) still ``pending`` past the deadline.

Like payments' (:mod:`storage.reconcile`): due rows are leased by pushing
``reconcile_after`` forward (``FOR UPDATE SKIP LOCKED``, so processes share the
work); an inconclusive check backs off exponentially and, at the max checks,
flags the row ``review_required`` with its event, once. The reserved amount
stays reserved: only a definite answer (recorded through
:func:`storage.refunds.record_submission` / :func:`storage.accounts.record_payout`,
conditional on ``status = 'pending'``) releases or spends it.
"""

from __future__ import annotations

import asyncpg

from domain import render
from domain.events import NewEvent
from storage import events as event_log

# Per kind: its table, the extra condition choosing its rows, and the event of a flag.
_KINDS = {
    "refund": ("refunds", "TRUE", "refund.review_required"),
    "withdrawal": ("account_transactions", "type = 'withdrawal'", "account.withdrawal.review_required"),
}


async def claim_due(conn: asyncpg.Connection, kind: str, limit: int, deadline_s: float, lease_s: float) -> list[dict]:
    """Lease up to ``limit`` due rows of ``kind`` (``refund`` or ``withdrawal``).

    Returns:
      The rows (with, for refunds, the charge's ``connector_txn_id`` and the
      ``connector_account_id`` that charged it, for a real connector).
    """
    table, where, _ = _KINDS[kind]
    rows = await conn.fetch(
        f"UPDATE {table} t SET reconcile_after = now() + make_interval(secs => $3)"
        f" WHERE t.id IN (SELECT id FROM {table} WHERE status = 'pending' AND NOT review_required AND {where}"
        "   AND coalesce(reconcile_after, created_at + make_interval(secs => $2)) < now()"
        "   ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING t.*",
        limit, deadline_s, lease_s,
    )
    out = [dict(r) for r in rows]
    if kind == "refund" and out:
        charges = await conn.fetch(
            "SELECT payment_id, connector, connector_txn_id, connector_account_id FROM payment_attempts"
            " WHERE payment_id = ANY($1::text[]) AND status = 'succeeded'", [r["payment_id"] for r in out])
        by_payment = {(c["payment_id"], c["connector"]): c for c in charges}
        for r in out:
            charge = by_payment.get((r["payment_id"], r["connector"]))
            r["connector_txn_id"] = charge["connector_txn_id"] if charge else ""
            r["connector_account_id"] = charge["connector_account_id"] if charge else None
    return out


async def record_check(conn: asyncpg.Connection, kind: str, row_id: str, max_checks: int, base_s: float) -> dict:
    """Count an inconclusive check; at ``max_checks`` flag the row for review (once, with its event).

    The next check comes after ``base_s * 2**checks`` seconds (at most an hour).

    Returns:
      ``{"checks", "review_required"}`` after the update (``checks`` None: no longer pending).
    """
    table, _, event_type = _KINDS[kind]
    row = await conn.fetchrow(
        f"WITH before AS (SELECT review_required FROM {table} WHERE id = $1 FOR UPDATE)"
        f" UPDATE {table} SET reconcile_checks = reconcile_checks + 1,"
        " review_required = review_required OR reconcile_checks + 1 >= $2,"
        " reconcile_after = now() + make_interval(secs => LEAST(3600, $3 * power(2, reconcile_checks))),"
        " updated_at = now()"
        " WHERE id = $1 AND status = 'pending' RETURNING *, (SELECT review_required FROM before) AS was_flagged",
        row_id, max_checks, base_s,
    )
    if row is None:
        return {"checks": None, "review_required": False}
    if row["review_required"] and not row["was_flagged"]:  # flagged by this very check: its event, once
        if kind == "refund":
            customer = await conn.fetchval("SELECT customer_id FROM payments WHERE id = $1", row["payment_id"])
            snapshot = render.refund(row)
        else:
            customer = await conn.fetchval("SELECT customer_id FROM accounts WHERE id = $1", row["account_id"])
            snapshot = render.account_transaction(row, customer)
        await event_log.append(conn, row["merchant_id"], NewEvent(event_type, row["id"], snapshot, customer))
    return {"checks": row["reconcile_checks"], "review_required": row["review_required"]}
