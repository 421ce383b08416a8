"""Newest-first keyset pages over a merchant's rows (ids sort by creation)."""

from __future__ import annotations

import asyncpg

# Tables a list may page over; a whitelist because the name is put into SQL.
_TABLES = frozenset({"orders", "payments", "payment_attempts", "refunds", "disputes", "accounts",
                     "account_transactions", "webhook_deliveries", "connector_accounts"})


async def page_rows(conn: asyncpg.Connection, table: str, merchant_id: str, *, limit: int,
                    starting_after: str | None, filters: dict[str, object]) -> tuple[list, bool]:
    """One page of ``table`` rows of ``merchant_id``, newest first.

    Args:
      filters: column → value equality filters (``None`` values are ignored).

    Returns:
      ``(rows, has_more)``.
    """
    if table not in _TABLES:
        raise ValueError(table)
    conds = ["merchant_id = $1"]
    args: list = [merchant_id]
    for column, value in filters.items():
        if value is not None:
            args.append(value)
            conds.append(f"{column} = ${len(args)}")
    if starting_after:
        args.append(starting_after)
        conds.append(f"id < ${len(args)}")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT * FROM {table} WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT ${len(args)}", *args
    )
    return rows[:limit], len(rows) > limit
