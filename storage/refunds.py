"""Refunds: reserved against their payment when created, settled by the connector.

"The sum of non-failed refunds never exceeds ``amount_received``" is enforced
where it cannot be raced: :func:`begin` reserves with a conditional
increment of ``amount_refunded`` (backed by the
table's ``CHECK (amount_refunded <= amount_received)``), so concurrent
requests in any number of processes cannot together refund too much.

Lock order, everywhere: payment, then refund, then order, then merchant (the
event seq), so the payment's other transactions never deadlock with these.
"""

from __future__ import annotations

import asyncpg

from domain import refunds as rules
from domain import render
from domain.errors import ChargeDisputed, NotFound, RefundExceedsPayment, StateError
from domain.events import NewEvent
from domain.ids import new_id
from domain.submission import Submission
from storage import events as event_log
from storage.database import single_unit
from storage.pagination import page_rows
from telemetry import metrics

# Dispute statuses that make a refund a double payout (held or lost funds).
_BLOCKING_DISPUTES = ["needs_response", "under_review", "lost", "accepted"]


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, refund_id: str):
    """The refund row, or raise :class:`NotFound` (also for another merchant's refund)."""
    row = await conn.fetchrow("SELECT * FROM refunds WHERE id = $1 AND merchant_id = $2", refund_id, merchant_id)
    if row is None:
        raise NotFound(f"No such refund: '{refund_id}'", param="id")
    return row


_BEGIN_READ = (
    "SELECT p.status, p.currency, p.amount_received, p.amount_refunded,"
    " EXISTS (SELECT 1 FROM account_transactions t WHERE t.payment_id = p.id) AS funds_deposit,"
    " EXISTS (SELECT 1 FROM disputes d WHERE d.payment_id = p.id AND d.status = ANY($3::text[])) AS disputed,"
    " a.connector, a.connector_txn_id, a.connector_account_id"
    " FROM payments p LEFT JOIN payment_attempts a ON a.payment_id = p.id AND a.status = 'succeeded'"
    " WHERE p.id = $1 AND p.merchant_id = $2"
)
# The reservation: a conditional increment (backed by the table's CHECK), so
# concurrent refunds in any number of processes cannot together refund too
# much, and the refund row only if it matched.
_BEGIN_WRITE = (
    "WITH upd AS (UPDATE payments SET amount_refunded = amount_refunded + $2, updated_at = now()"
    " WHERE id = $1 AND status = 'succeeded' AND amount_refunded + $2 <= amount_received"
    " AND NOT EXISTS (SELECT 1 FROM disputes d WHERE d.payment_id = $1 AND d.status = ANY($9::text[]))"
    " RETURNING id)"
    " INSERT INTO refunds (id, merchant_id, payment_id, amount, currency, reason, status, connector, metadata)"
    " SELECT $3, $4, $1, $2, $5, $6, 'pending', $7, $8 FROM upd RETURNING *"
)


@single_unit
async def begin(conn: asyncpg.Connection, merchant_id: str, payment_id: str, amount: int | None,
                reason: str | None, metadata: dict) -> dict:
    """Accept a refund: count it against the payment and store it ``pending``.

    Two statements, no transaction: a read for the checks and the amount, then
    the guarded reservation (see :data:`_BEGIN_WRITE`); if another refund got
    there first the guard fails and the refund is refused.

    Returns:
      ``{"refund": <row>, "connector_txn_id": <the charge>, "connector_account_id": <the
      account that charged, for a real connector>}`` for the connector call.

    Raises:
      NotFound: no such payment for this merchant.
      StateError: the payment did not succeed, or it funds a wallet deposit.
      ChargeDisputed: the payment has an open or lost dispute.
      RefundExceedsPayment: the amount is more than what is left to refund.
    """
    payment = await conn.fetchrow(_BEGIN_READ, payment_id, merchant_id, _BLOCKING_DISPUTES)
    if payment is None:
        raise NotFound(f"No such payment: '{payment_id}'", param="id")
    rules.refundable_payment(payment["status"])
    if payment["funds_deposit"]:
        # Refunding it would return money the wallet still holds.
        raise StateError("This payment funds a wallet deposit; withdraw from the account instead.")
    if payment["disputed"]:
        raise ChargeDisputed("This payment has been disputed and cannot be refunded.")
    amount = rules.refund_amount(amount, payment["amount_received"], payment["amount_refunded"])
    if payment["connector_txn_id"] is None:
        raise StateError("The payment has no successful charge to refund.")
    row = await conn.fetchrow(_BEGIN_WRITE, payment_id, amount, new_id("re"), merchant_id, payment["currency"],
                              reason, payment["connector"], metadata, _BLOCKING_DISPUTES)
    if row is None:  # another refund (or a dispute) got there between the read and the write
        raise RefundExceedsPayment("The refund exceeds what is left to refund.", param="amount")
    metrics.transition("refund", row["id"], None, "pending", payment=payment_id, amount=amount,
                       connector=payment["connector"])
    return {"refund": dict(row), "connector_txn_id": payment["connector_txn_id"],
            "connector_account_id": payment["connector_account_id"]}


async def settle(conn: asyncpg.Connection, refund_id: str, trigger: rules.Trigger, *,
                 reference: str | None = None, failure_code: str | None = None) -> dict | None:
    """Move a pending refund to ``succeeded``/``failed`` and write its event.

    A failed refund gives its amount back to the payment; a succeeded one may
    complete its order's refund (the order becomes ``refunded``; the contract
    has no order event for it, ``refund.succeeded`` reports the change).

    Returns:
      The refund's API form, or ``None`` if it had already ended (nothing changed).
    """
    payment_id = await conn.fetchval("SELECT payment_id FROM refunds WHERE id = $1", refund_id)
    payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)
    refund = await conn.fetchrow("SELECT * FROM refunds WHERE id = $1 FOR UPDATE", refund_id)
    if not rules.can(refund["status"], trigger):
        return None  # it already ended: a late or duplicate answer changes nothing
    new_status = rules.next_status(refund["status"], trigger)
    row = await conn.fetchrow(
        "UPDATE refunds SET status = $2, connector_refund_id = COALESCE(connector_refund_id, $3),"
        " failure_code = $4, updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING *",
        refund_id, new_status.value, reference, failure_code if new_status is rules.Status.FAILED else None,
    )
    if new_status is rules.Status.FAILED:
        await conn.execute(
            "UPDATE payments SET amount_refunded = amount_refunded - $2, updated_at = now() WHERE id = $1",
            payment_id, row["amount"],
        )
    elif payment["order_id"]:
        await _follow_order(conn, payment["order_id"])
    snapshot = render.refund(row)
    await event_log.append(conn, row["merchant_id"],
                           NewEvent(f"refund.{new_status.value}", row["id"], snapshot, payment["customer_id"]))
    metrics.transition("refund", refund_id, refund["status"], new_status.value, payment=payment_id,
                       error=row["failure_code"])
    return snapshot


async def _follow_order(conn: asyncpg.Connection, order_id: str) -> None:
    """``paid`` → ``refunded`` once every succeeded payment of the order is fully refunded."""
    rows = await conn.fetch(
        "SELECT p.amount_received, COALESCE((SELECT sum(r.amount) FROM refunds r WHERE r.payment_id = p.id"
        "   AND r.status = 'succeeded'), 0)::bigint AS refunded"
        " FROM payments p WHERE p.order_id = $1 AND p.status = 'succeeded'", order_id,
    )
    if rows and all(rules.order_fully_refunded(r["amount_received"], r["refunded"]) for r in rows):
        await conn.execute(
            "UPDATE orders SET status = 'refunded', updated_at = now() WHERE id = $1 AND status = 'paid'", order_id
        )


@single_unit
async def record_submission(conn: asyncpg.Connection, refund_id: str, submission: Submission) -> dict:
    """Record the connector's immediate answer to a refund request.

    A ``pending`` answer (the usual one: the outcome comes by webhook) is one
    statement; a final answer settles the refund in a transaction.

    Returns:
      The refund's API form now.
    """
    if submission.status in ("succeeded", "failed"):
        async with conn.transaction():
            if submission.status == "succeeded":
                await settle(conn, refund_id, rules.Trigger.SUCCEED, reference=submission.reference)
            else:
                await settle(conn, refund_id, rules.Trigger.FAIL, reference=submission.reference,
                             failure_code=submission.error_code or "refund_failed")
            return render.refund(await conn.fetchrow("SELECT * FROM refunds WHERE id = $1", refund_id))
    return render.refund(await conn.fetchrow(
        "UPDATE refunds SET connector_refund_id = COALESCE(connector_refund_id, $2),"
        " updated_at = CASE WHEN $2::text IS NULL THEN updated_at ELSE now() END WHERE id = $1 RETURNING *",
        refund_id, submission.reference,
    ))


async def apply_webhook(conn: asyncpg.Connection, inbox_row, payment, attempt_id: str | None) -> str:
    """Inbox applier for ``refund.succeeded``/``refund.failed`` (the payment row is locked).

    Returns:
      ``applied``, ``ignored`` (the refund had already ended) or ``unmatched``.
    """
    trigger = rules.WEBHOOK_TRIGGERS[inbox_row["kind"]]
    refund = None
    if inbox_row["object_id"]:
        refund = await conn.fetchrow("SELECT id, connector FROM refunds WHERE id = $1 AND payment_id = $2",
                                     inbox_row["object_id"], payment["id"])
    if refund is None:
        refund = await conn.fetchrow(
            "SELECT id, connector FROM refunds WHERE connector = $1 AND connector_refund_id = $2 AND payment_id = $3",
            inbox_row["connector"], inbox_row["connector_txn_id"], payment["id"],
        )
    if refund is None or refund["connector"] != inbox_row["connector"]:
        return "unmatched"
    settled = await settle(conn, refund["id"], trigger, reference=inbox_row["connector_txn_id"],
                           failure_code="refund_failed")
    return "applied" if settled else "ignored"


async def get(conn: asyncpg.Connection, merchant_id: str, refund_id: str) -> dict:
    return render.refund(await fetch_row(conn, merchant_id, refund_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    payment_id: str | None) -> tuple[list[dict], bool]:
    rows, more = await page_rows(conn, "refunds", merchant_id, limit=limit, starting_after=starting_after,
                                 filters={"payment_id": payment_id})
    return [render.refund(r) for r in rows], more
