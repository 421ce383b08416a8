"""The reconciler: resolves payments still ``processing`` past their deadline, and
ends those left in ``requires_action`` past ``PAYCAST_ACTION_DEADLINE_S`` (abandoned).

Work is claimed with ``FOR UPDATE SKIP LOCKED`` (a lease on the deadline), so
several processes share it without doing anything twice; each payment is then
handled by its own payment actor.
"""

from __future__ import annotations

import logging

import trio

from actors.payment_messages import Abandon, Reconcile
from actors.ports import Reconciling
from domain.errors import PaycastError

log = logging.getLogger("paycast.reconciler")
BATCH = 50
LEASE_S = 30.0
CONCURRENCY = 8


async def run_reconciler(payments: Reconciling) -> None:
    from storage import reconcile

    while True:
        # Payments still processing past their deadline, and payments whose
        # customer never finished an action (3-D Secure, a checkout) in time.
        rows = [(row, Reconcile) for row in await payments.db.transaction(reconcile.claim_due, BATCH, LEASE_S)]
        rows += [(row, Abandon) for row in await payments.db.transaction(reconcile.claim_abandoned, BATCH, LEASE_S)]
        if not rows:
            await trio.sleep(payments.settings.reconcile_interval_s)
            continue
        limiter = trio.Semaphore(CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for row, message in rows:
                await limiter.acquire()
                nursery.start_soon(_one, payments, row, message, limiter, name="reconciler:check")


async def _one(payments: Reconciling, row: dict, message: type, limiter: trio.Semaphore) -> None:
    try:
        await payments.ask_payment(row["id"], message(row["merchant_id"]))
    except PaycastError as exc:
        log.warning("reconcile %s skipped: %s", row["id"], exc.message)
    except Exception:  # noqa: BLE001 - the lease expires and it is retried
        log.exception("reconcile %s failed", row["id"])
    finally:
        limiter.release()
