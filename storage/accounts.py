"""Wallet accounts and their transactions (deposits, withdrawals).

Balances are sums of ``ledger_entries`` (see :mod:`domain.ledger`). Every
status write is conditional (``WHERE status = 'pending'``) and the ledger is
unique per (transaction, movement, book), so a deposit is credited once
however often its payment's success is reported, and a payout is paid out
or released once. Withdrawals lock the account row before summing its
available balance, so concurrent withdrawals (in any number of processes)
cannot together reserve more than is there.

Lock order: payment, transaction, account, merchant (the event seq).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from domain import render, wallets
from domain.errors import NotFound
from domain.events import NewEvent
from domain.ids import new_id
from domain.submission import Submission
from domain.ledger import Movement, check_reserve
from storage import events as event_log
from storage import ledger, merchants, payments
from storage.pagination import page_rows
from telemetry import metrics


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, account_id: str, *, lock: bool = False):
    """The account row, or raise :class:`NotFound` (also for another merchant's account)."""
    sql = "SELECT * FROM accounts WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, account_id, merchant_id)
    if row is None:
        raise NotFound(f"No such account: '{account_id}'", param="id")
    return row


async def _render(conn: asyncpg.Connection, row) -> dict:
    b = await ledger.balance(conn, row["id"])
    return render.account(row, b.balance, b.available)


async def create(conn: asyncpg.Connection, merchant_id: str, customer_id: str, currency: str,
                 metadata: dict) -> dict:
    row = await conn.fetchrow(
        "INSERT INTO accounts (id, merchant_id, customer_id, currency, metadata) VALUES ($1, $2, $3, $4, $5)"
        " RETURNING *", new_id("acct"), merchant_id, customer_id, currency, metadata,
    )
    return render.account(row, 0, 0)


async def get(conn: asyncpg.Connection, merchant_id: str, account_id: str) -> dict:
    return await _render(conn, await fetch_row(conn, merchant_id, account_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    customer_id: str | None) -> tuple[list[dict], bool]:
    rows, more = await page_rows(conn, "accounts", merchant_id, limit=limit, starting_after=starting_after,
                                 filters={"customer_id": customer_id})
    sums = await ledger.balances(conn, [r["id"] for r in rows])
    return [render.account(r, sums[r["id"]].balance, sums[r["id"]].available) for r in rows], more


# ---------------------------------------------------------------- transactions

async def _txn_render(conn: asyncpg.Connection, row, customer_id: str | None = None) -> dict:
    if customer_id is None:
        customer_id = await conn.fetchval("SELECT customer_id FROM accounts WHERE id = $1", row["account_id"])
    return render.account_transaction(row, customer_id)


async def get_transaction(conn: asyncpg.Connection, merchant_id: str, transaction_id: str) -> dict:
    row = await conn.fetchrow("SELECT * FROM account_transactions WHERE id = $1 AND merchant_id = $2",
                              transaction_id, merchant_id)
    if row is None:
        raise NotFound(f"No such transaction: '{transaction_id}'", param="id")
    return await _txn_render(conn, row)


async def list_transactions(conn: asyncpg.Connection, merchant_id: str, account_id: str, *, limit: int,
                            starting_after: str | None, filters: dict[str, str | None]) -> tuple[list[dict], bool]:
    account = await fetch_row(conn, merchant_id, account_id)
    rows, more = await page_rows(conn, "account_transactions", merchant_id, limit=limit,
                                 starting_after=starting_after, filters={"account_id": account_id, **filters})
    return [render.account_transaction(r, account["customer_id"]) for r in rows], more


async def begin_deposit(conn: asyncpg.Connection, merchant_id: str, account_id: str, amount: int,
                        payment_method: dict, deadline_s: float, route: payments.Route):
    """Create a deposit: its payment (started, to be confirmed by the payment
    actor) and the ``pending`` transaction that follows it.

    Returns:
      ``(transaction API form, payments.Begun)``.

    Raises:
      NotFound: no such account.
    """
    account = await fetch_row(conn, merchant_id, account_id)
    transaction_id = new_id("txn")
    spec = {"amount": amount, "currency": account["currency"], "customer_id": account["customer_id"],
            "payment_method": payment_method, "capture_method": "automatic",
            "metadata": {"account_id": account_id, "transaction_id": transaction_id}}
    routing = await merchants.routing(conn, merchant_id)
    candidates = route({"payment_method": payment_method, "pinned_connector": None}, routing)
    begun = await payments.create_and_begin(conn, merchant_id, spec, deadline_s, candidates)
    row = await conn.fetchrow(
        "INSERT INTO account_transactions (id, merchant_id, account_id, type, status, amount, currency, payment_id,"
        " connector) VALUES ($1, $2, $3, 'deposit', 'pending', $4, $5, $6, $7) RETURNING *",
        transaction_id, merchant_id, account_id, amount, account["currency"], begun.payment["id"], begun.connector,
    )
    metrics.transition("transaction", transaction_id, None, "pending", type="deposit", payment=begun.payment["id"])
    return render.account_transaction(row, account["customer_id"]), begun


async def begin_withdrawal(conn: asyncpg.Connection, merchant_id: str, account_id: str, amount: int,
                           route: Callable[[dict | None], list[str]]) -> dict:
    """Create a withdrawal and reserve its amount at once.

    Args:
      route: pure function from the merchant's routing config to payout connectors, best first.

    Returns:
      The ``pending`` transaction's API form.

    Raises:
      NotFound: no such account.
      InsufficientFunds: more than the available balance.
    """
    account = await fetch_row(conn, merchant_id, account_id, lock=True)
    check_reserve((await ledger.balance(conn, account_id)).available, amount)
    routing = await merchants.routing(conn, merchant_id)
    connector = route(routing)[0]
    row = await conn.fetchrow(
        "INSERT INTO account_transactions (id, merchant_id, account_id, type, status, amount, currency, connector)"
        " VALUES ($1, $2, $3, 'withdrawal', 'pending', $4, $5, $6) RETURNING *",
        new_id("txn"), merchant_id, account_id, amount, account["currency"], connector,
    )
    await ledger.write_movement(conn, merchant_id, row["id"], row["currency"], Movement.RESERVE, account_id, amount)
    await conn.execute("UPDATE accounts SET updated_at = now() WHERE id = $1", account_id)
    metrics.transition("transaction", row["id"], None, "pending", type="withdrawal", connector=connector)
    return render.account_transaction(row, account["customer_id"])


async def _transition(conn: asyncpg.Connection, transaction_id: str, trigger: wallets.Trigger, *,
                      reference: str | None = None, failure_code: str | None = None) -> NewEvent | None:
    """Move a pending transaction, write its ledger movement, return its event
    (``None``: it had already ended, nothing changed)."""
    row = await conn.fetchrow("SELECT * FROM account_transactions WHERE id = $1 FOR UPDATE", transaction_id)
    step = wallets.step(row["type"], row["status"], trigger)
    if step is None:
        return None
    row = await conn.fetchrow(
        "UPDATE account_transactions SET status = $2, connector_payout_id = COALESCE(connector_payout_id, $3),"
        " failure_code = $4, updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING *",
        transaction_id, step.status.value, reference, failure_code if step.status is wallets.Status.FAILED else None,
    )
    if step.movement is not None:
        await ledger.write_movement(conn, row["merchant_id"], row["id"], row["currency"], step.movement,
                                    row["account_id"], row["amount"])
        await conn.execute("UPDATE accounts SET updated_at = now() WHERE id = $1", row["account_id"])
    snapshot = await _txn_render(conn, row)
    metrics.transition("transaction", row["id"], "pending", step.status.value, type=row["type"],
                       error=row["failure_code"])
    return NewEvent(step.event, row["id"], snapshot, snapshot["customer_id"])


async def follow_payment(conn: asyncpg.Connection, payment, status: str) -> list[NewEvent]:
    """A deposit follows its payment (:data:`DEPOSIT_FOLLOWER`)."""
    trigger = wallets.PAYMENT_TRIGGERS.get(status)
    # Deposit payments carry their transaction id; other payments skip the lookup.
    if trigger is None or "transaction_id" not in (payment["metadata"] or {}):
        return []
    transaction_id = await conn.fetchval(
        "SELECT id FROM account_transactions WHERE payment_id = $1 AND status = 'pending'", payment["id"]
    )
    if transaction_id is None:
        return []
    failure = (payment["last_error"] or {}).get("code") if trigger is wallets.Trigger.FAIL else None
    event = await _transition(conn, transaction_id, trigger, failure_code=failure or "payment_failed")
    return [event] if event else []


def _follows(payment, status: str) -> bool:
    """Whether :func:`follow_payment` may change something (pure: no statement)."""
    return status in wallets.PAYMENT_TRIGGERS and "transaction_id" in (payment["metadata"] or {})


DEPOSIT_FOLLOWER = payments.Follower(_follows, follow_payment)


async def record_payout(conn: asyncpg.Connection, transaction_id: str, submission: Submission) -> dict:
    """Record the connector's immediate answer to a payout request.

    Returns:
      The transaction's API form now.
    """
    event = None
    if submission.status in ("succeeded", "failed"):
        trigger = wallets.Trigger.SUCCEED if submission.status == "succeeded" else wallets.Trigger.FAIL
        event = await _transition(conn, transaction_id, trigger, reference=submission.reference,
                                  failure_code=submission.error_code or "payout_failed")
    elif submission.reference:
        await conn.execute(
            "UPDATE account_transactions SET connector_payout_id = COALESCE(connector_payout_id, $2),"
            " updated_at = now() WHERE id = $1", transaction_id, submission.reference,
        )
    row = await conn.fetchrow("SELECT * FROM account_transactions WHERE id = $1", transaction_id)
    if event is not None:
        await event_log.append(conn, row["merchant_id"], event)
    return await _txn_render(conn, row)


async def apply_payout_webhook(conn: asyncpg.Connection, inbox_row) -> tuple[str, str | None]:
    """Inbox applier for ``payout.paid``/``payout.failed`` (no payment involved).

    Returns:
      ``(inbox status, merchant id)``: ``applied``, ``ignored`` (already ended)
      or ``unmatched`` (no such withdrawal on that connector).
    """
    row = None
    if inbox_row["object_id"]:
        row = await conn.fetchrow("SELECT * FROM account_transactions WHERE id = $1 AND type = 'withdrawal'",
                                  inbox_row["object_id"])
    if row is None:
        row = await conn.fetchrow(
            "SELECT * FROM account_transactions WHERE connector = $1 AND connector_payout_id = $2",
            inbox_row["connector"], inbox_row["connector_txn_id"],
        )
    if (row is None or row["connector"] != inbox_row["connector"]
            or row["connector_payout_id"] not in (None, inbox_row["connector_txn_id"])):
        return "unmatched", row["merchant_id"] if row else None
    event = await _transition(conn, row["id"], wallets.PAYOUT_TRIGGERS[inbox_row["kind"]],
                              reference=inbox_row["connector_txn_id"], failure_code="payout_failed")
    if event is None:
        return "ignored", row["merchant_id"]
    await event_log.append(conn, row["merchant_id"], event)
    return "applied", row["merchant_id"]
