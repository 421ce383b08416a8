"""Reconciles refunds and withdrawals (payouts) left ``pending`` past the deadline.

A lost webhook, or a crash between reserving and calling the connector, would
otherwise leave a refund pending for ever and a withdrawal's funds reserved
for ever. Each due row is asked about (through :mod:`actors.connector_call`):
a definite answer settles it exactly as its webhook would have (conditional on
``pending``, so a webhook racing the check is harmless); no answer counts a
check, and after ``PAYCAST_RECONCILE_MAX_CHECKS`` the row is flagged
``review_required`` with its event, its reserved amount untouched.
"""

from __future__ import annotations

import logging

import trio

from actors.connector_call import CallResult
from actors.ports import PendingChecks
from domain.errors import Unavailable
from gateways.base import PayoutRequest, RefundRequest, Submission
from storage import accounts, pending_reconcile, refunds

log = logging.getLogger("paycast.reconciler")
BATCH = 50
LEASE_S = 30.0
CONCURRENCY = 8


async def run_pending_reconciler(payments: PendingChecks) -> None:
    """Run for ever: claim due refunds and withdrawals, ask, record."""
    settings = payments.settings
    while True:
        worked = 0
        for kind in ("refund", "withdrawal"):
            rows = await payments.db.transaction(pending_reconcile.claim_due, kind, BATCH,
                                               settings.processing_deadline_s, LEASE_S)
            worked += len(rows)
            limiter = trio.Semaphore(CONCURRENCY)
            async with trio.open_nursery() as nursery:
                for row in rows:
                    await limiter.acquire()
                    nursery.start_soon(_check, payments, kind, row, limiter, name=f"reconciler:{kind}")
        if not worked:
            await trio.sleep(settings.reconcile_interval_s)


async def _check(payments: PendingChecks, kind: str, row: dict, limiter: trio.Semaphore) -> None:
    try:
        await check_one(payments, kind, row)
    except Unavailable as exc:
        log.warning("reconcile %s %s skipped: %s", kind, row["id"], exc)  # its lease expires; retried
    except Exception:  # noqa: BLE001 - its lease expires and it is retried
        log.exception("reconcile %s %s failed", kind, row["id"])
    finally:
        limiter.release()


async def check_one(payments: PendingChecks, kind: str, row: dict) -> dict:
    """Ask the connector about one pending refund or withdrawal and record what it says.

    Returns:
      What was recorded: the row's API form after a definite answer, or the
      check count ``{"checks", "review_required"}``.
    """
    db, settings = payments.db, payments.settings
    if kind == "refund":
        request = RefundRequest(refund_id=row["id"], payment_id=row["payment_id"], merchant_id=row["merchant_id"],
                                connector_txn_id=row["connector_txn_id"], amount=row["amount"],
                                currency=row["currency"])
        result: CallResult[Submission] = await payments.connector_call.call(
            row["connector"], lambda c: c.retrieve_refund(request, row["connector_refund_id"]),
            what=f"retrieve refund {row['id']}", account_id=row["connector_account_id"])
    else:
        request = PayoutRequest(transaction_id=row["id"], account_id=row["account_id"],
                                merchant_id=row["merchant_id"], amount=row["amount"], currency=row["currency"])
        result = await payments.connector_call.call(
            row["connector"], lambda c: c.retrieve_payout(request, row["connector_payout_id"]),
            what=f"retrieve payout {row['id']}")
    answer = result.value if result.ok else None
    if answer is not None and answer.status in ("succeeded", "failed"):
        log.info("reconciled %s %s: %s", kind, row["id"], answer.status)
        record = refunds.record_submission if kind == "refund" else accounts.record_payout
        return await db.transaction(record, row["id"], answer)
    return await db.transaction(pending_reconcile.record_check, kind, row["id"], settings.reconcile_max_checks,
                                settings.processing_deadline_s)
