"""Disputes: opened and decided by connector webhooks, answered by the merchant.

Every status write is conditional on the status the state machine expects
(``WHERE status = $expected``), so a verdict racing a merchant action in
another process cannot both win.
"""

from __future__ import annotations

import asyncpg

from domain import disputes as rules
from domain import render, webhooks
from domain.errors import DisputeStateError, NotFound, NotYetApplicable
from domain.events import NewEvent
from domain.ids import new_id
from storage import events as event_log
from storage.pagination import page_rows

# A webhook that arrives before what it is about (a verdict before its dispute
# was opened, a dispute before its payment succeeded: reordered webhooks) is
# retried about once a second this many times, then kept for review as unmatched.
NOT_YET_TRIES = 30


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, dispute_id: str, *, lock: bool = False):
    """The dispute row, or raise :class:`NotFound` (also for another merchant's dispute).

    With ``connector_account_id``: the connector account of the charge disputed
    (a real connector's dispute is answered through the account that charged).
    """
    sql = ("SELECT d.*, (SELECT a.connector_account_id FROM payment_attempts a"
           "             WHERE a.payment_id = d.payment_id AND a.status = 'succeeded' LIMIT 1) AS connector_account_id"
           " FROM disputes d WHERE d.id = $1 AND d.merchant_id = $2" + (" FOR UPDATE OF d" if lock else ""))
    row = await conn.fetchrow(sql, dispute_id, merchant_id)
    if row is None:
        raise NotFound(f"No such dispute: '{dispute_id}'", param="id")
    return row


async def _event(conn: asyncpg.Connection, row, status: rules.Status) -> dict:
    snapshot = render.dispute(row)
    customer_id = await conn.fetchval("SELECT customer_id FROM payments WHERE id = $1", row["payment_id"])
    await event_log.append(conn, row["merchant_id"],
                           NewEvent(rules.EVENT_FOR[status], row["id"], snapshot, customer_id))
    return snapshot


async def _move(conn: asyncpg.Connection, row, new_status: rules.Status) -> asyncpg.Record | None:
    """Conditional on the status the row had: a racing change in another process wins only once."""
    return await conn.fetchrow(
        "UPDATE disputes SET status = $3, updated_at = now() WHERE id = $1 AND status = $2 RETURNING *",
        row["id"], row["status"], new_status.value,
    )


async def apply_webhook(conn: asyncpg.Connection, inbox_row, payment, attempt_id: str | None) -> str:
    """Inbox applier for ``dispute.opened|won|lost`` (the payment row is locked).

    Returns:
      ``applied``, ``ignored`` (duplicate or late) or ``unmatched``.

    Raises:
      NotYetApplicable: the payment has not succeeded yet, or a verdict came before its dispute.
    """
    if inbox_row["kind"] == "dispute.opened":
        return await _open(conn, inbox_row, payment)
    row = await conn.fetchrow(
        "SELECT * FROM disputes WHERE connector = $1 AND connector_dispute_id = $2 AND payment_id = $3 FOR UPDATE",
        inbox_row["connector"], inbox_row["connector_txn_id"], payment["id"],
    )
    if row is None:
        if inbox_row["tries"] < NOT_YET_TRIES:
            raise NotYetApplicable("verdict before its dispute")
        return "unmatched"
    trigger = rules.WEBHOOK_TRIGGERS[inbox_row["kind"]]
    if not rules.can(row["status"], trigger):
        return "ignored"  # already decided (or accepted): a terminal status never moves
    new_status = rules.next_status(row["status"], trigger)
    moved = await _move(conn, row, new_status)
    await _event(conn, moved, new_status)
    return "applied"


async def _open(conn: asyncpg.Connection, inbox_row, payment) -> str:
    if payment["status"] in ("requires_confirmation", "processing", "requires_action", "requires_capture"):
        if inbox_row["tries"] < NOT_YET_TRIES:
            raise NotYetApplicable("dispute before its payment succeeded")
        return "unmatched"
    if payment["status"] != "succeeded":
        return "ignored"
    # A real connector's event keeps its amount in the row; a simulator's is in the raw body.
    amount = inbox_row["amount"]
    if amount is None:
        try:
            amount = webhooks.parse(inbox_row["connector"], inbox_row["raw_body"].encode()).amount
        except Exception:  # noqa: BLE001 - it was parsed once before being stored
            amount = None
    if not amount or amount <= 0 or amount > payment["amount_received"]:
        amount = payment["amount_received"]
    row = await conn.fetchrow(
        "INSERT INTO disputes (id, merchant_id, payment_id, amount, currency, status, connector, connector_dispute_id)"
        " VALUES ($1, $2, $3, $4, $5, 'needs_response', $6, $7)"
        " ON CONFLICT (connector, connector_dispute_id) DO NOTHING RETURNING *",
        new_id("dp"), payment["merchant_id"], payment["id"], amount, payment["currency"], inbox_row["connector"],
        inbox_row["connector_txn_id"],
    )
    if row is None:
        return "ignored"  # the same dispute, announced again
    await _event(conn, row, rules.Status.NEEDS_RESPONSE)
    return "applied"


async def submit_evidence(conn: asyncpg.Connection, merchant_id: str, dispute_id: str, text: str) -> dict:
    """``needs_response`` → ``under_review`` with the evidence (no event: the
    contract has none for it; the verdict's event follows).

    Raises:
      NotFound, DisputeStateError.
    """
    row = await fetch_row(conn, merchant_id, dispute_id, lock=True)
    new_status = rules.next_status(row["status"], rules.Trigger.SUBMIT_EVIDENCE)
    moved = await conn.fetchrow(
        "UPDATE disputes SET status = $3, evidence = $4, evidence_submitted_at = now(), updated_at = now()"
        " WHERE id = $1 AND status = $2 RETURNING *", dispute_id, row["status"], new_status.value, text,
    )
    return render.dispute(moved)


async def accept(conn: asyncpg.Connection, merchant_id: str, dispute_id: str) -> dict:
    """``needs_response`` → ``accepted`` and its event.

    Raises:
      NotFound, DisputeStateError.
    """
    row = await fetch_row(conn, merchant_id, dispute_id, lock=True)
    new_status = rules.next_status(row["status"], rules.Trigger.ACCEPT)
    moved = await _move(conn, row, new_status)
    if moved is None:  # unreachable while locked
        raise DisputeStateError("The dispute changed; retry.")
    return await _event(conn, moved, new_status)


async def get(conn: asyncpg.Connection, merchant_id: str, dispute_id: str) -> dict:
    return render.dispute(await fetch_row(conn, merchant_id, dispute_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    filters: dict[str, str | None]) -> tuple[list[dict], bool]:
    rows, more = await page_rows(conn, "disputes", merchant_id, limit=limit, starting_after=starting_after,
                                 filters=filters)
    return [render.dispute(r) for r in rows], more


async def merchant_balance(conn: asyncpg.Connection, merchant_id: str) -> dict:
    """The merchant's balance view per currency: received, refunded, disputed (held / lost), available."""
    paid = await conn.fetch(
        "SELECT currency, sum(amount_received)::bigint AS received, sum(amount_refunded)::bigint AS refunded"
        " FROM payments WHERE merchant_id = $1 AND status = 'succeeded' GROUP BY currency", merchant_id,
    )
    disputed = await conn.fetch(
        "SELECT currency, status, sum(amount)::bigint AS amount FROM disputes WHERE merchant_id = $1"
        " GROUP BY currency, status", merchant_id,
    )
    currencies = sorted({r["currency"] for r in paid} | {r["currency"] for r in disputed})
    data = []
    for currency in currencies:
        p = next((r for r in paid if r["currency"] == currency), None)
        items = [(r["status"], r["amount"]) for r in disputed if r["currency"] == currency]
        data.append({"currency": currency, **rules.balance(p["received"] if p else 0, p["refunded"] if p else 0,
                                                           items)})
    return {"object": "balance", "data": data}
