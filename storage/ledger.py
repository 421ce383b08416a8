"""The wallet ledger in the database: append movements, sum balances.

``ledger_entries`` is append-only (a trigger refuses updates and deletes) and
unique on (transaction, movement, book), so a movement is written at most
once however often the code path that writes it runs.
"""

from __future__ import annotations

import asyncpg

from domain.ledger import Balances, Movement, balances as sum_balances, entries


async def write_movement(conn: asyncpg.Connection, merchant_id: str, transaction_id: str, currency: str,
                         movement: Movement, account_id: str, amount: int) -> None:
    """Append the two entries of ``movement`` (one statement).

    Raises:
      asyncpg.UniqueViolationError: the movement was already written (a bug
        upstream: callers write movements only on conditional transitions).
    """
    debit, credit = entries(movement, account_id, amount)
    await conn.execute(
        "INSERT INTO ledger_entries (merchant_id, transaction_id, movement, account_id, book, currency, amount)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7), ($1, $2, $3, $8, $9, $6, $10)",
        merchant_id, transaction_id, movement.value, debit.account_id, debit.book.value, currency, debit.amount,
        credit.account_id, credit.book.value, credit.amount,
    )


async def balances(conn: asyncpg.Connection, account_ids: list[str]) -> dict[str, Balances]:
    """Each wallet's balances, summed from its entries."""
    rows = await conn.fetch(
        "SELECT account_id, book, sum(amount)::bigint AS total FROM ledger_entries"
        " WHERE account_id = ANY($1::text[]) GROUP BY account_id, book", account_ids,
    )
    by_account: dict[str, list[tuple[str, int]]] = {a: [] for a in account_ids}
    for r in rows:
        by_account[r["account_id"]].append((r["book"], r["total"]))
    return {a: sum_balances(items) for a, items in by_account.items()}


async def balance(conn: asyncpg.Connection, account_id: str) -> Balances:
    return (await balances(conn, [account_id]))[account_id]
