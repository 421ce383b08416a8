"""Merchants' connector accounts: stored sealed, read by merchant (tenant-scoped)
or, for the calls and webhooks of an account already chosen, by id.

Credentials and webhook secrets arrive here sealed (storage/secrets_box.py);
nothing in this module sees a plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from domain.errors import NotFound, StateError
from storage.pagination import page_rows

_ONE_ACTIVE = "connector_accounts_one_active"


def exists_error(connector: str) -> StateError:
    """The 409 for a second active account of one connector."""
    return StateError(f"This merchant already has an active {connector} account; update or delete it first.",
                      param="connector", code="connector_account_exists")


async def active_id(conn: asyncpg.Connection, merchant_id: str, connector: str) -> str | None:
    """The merchant's active account for ``connector``, if any."""
    return await conn.fetchval(
        "SELECT id FROM connector_accounts WHERE merchant_id = $1 AND connector = $2 AND status = 'active'",
        merchant_id, connector,
    )


async def active_by_connector(conn: asyncpg.Connection, merchant_id: str) -> dict[str, str]:
    """The merchant's active accounts, ``{connector: account id}``."""
    rows = await conn.fetch(
        "SELECT connector, id FROM connector_accounts WHERE merchant_id = $1 AND status = 'active' ORDER BY connector",
        merchant_id,
    )
    return {r["connector"]: r["id"] for r in rows}


async def insert(conn: asyncpg.Connection, fields: Mapping[str, object]) -> asyncpg.Record:
    """Store a new active account.

    Args:
      fields: id, merchant_id, connector, label, livemode, credentials_sealed,
        webhook_secret_sealed, credentials_mask.

    Raises:
      StateError: (409 ``connector_account_exists``) the merchant already has an
        active account for this connector (checked by the unique index, so two
        concurrent creates cannot both succeed).
    """
    try:
        return await conn.fetchrow(
            "INSERT INTO connector_accounts (id, merchant_id, connector, label, status, livemode,"
            "                                credentials_sealed, webhook_secret_sealed, credentials_mask)"
            " VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8)"
            " RETURNING *",
            fields["id"], fields["merchant_id"], fields["connector"], fields["label"], fields["livemode"],
            fields["credentials_sealed"], fields["webhook_secret_sealed"], fields["credentials_mask"],
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == _ONE_ACTIVE:
            raise exists_error(str(fields["connector"])) from None
        raise


async def get(conn: asyncpg.Connection, merchant_id: str, account_id: str, *, lock: bool = False) -> asyncpg.Record:
    """The merchant's account (any status).

    Raises:
      NotFound: no such account for this merchant (another merchant's is missing too).
    """
    row = await conn.fetchrow(
        "SELECT * FROM connector_accounts WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else ""),
        account_id, merchant_id,
    )
    if row is None:
        raise NotFound(f"No such connector account: '{account_id}'", param="id")
    return row


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int,
                    starting_after: str | None) -> tuple[list, bool]:
    """One newest-first page of the merchant's accounts."""
    return await page_rows(conn, "connector_accounts", merchant_id, limit=limit, starting_after=starting_after,
                           filters={})


async def update(conn: asyncpg.Connection, merchant_id: str, account_id: str, *, version: int,
                 changes: Mapping[str, object]) -> asyncpg.Record:
    """Apply ``changes`` to an account still at ``version``; new credentials bump the version.

    Args:
      version: the version the caller read (and tried the credentials against).
      changes: any of label, livemode, credentials_sealed, credentials_mask, webhook_secret_sealed.

    Raises:
      NotFound: no such account for this merchant.
      StateError: the account was changed meanwhile (its version moved on).
    """
    bump = "credentials_sealed" in changes
    # Column names come from this fixed list, never from the request.
    columns = [c for c in ("label", "livemode", "credentials_sealed", "credentials_mask", "webhook_secret_sealed")
               if c in changes]
    sets = [f"{c} = ${i}" for i, c in enumerate(columns, start=4)]
    row = await conn.fetchrow(
        "UPDATE connector_accounts SET " + ", ".join(sets + [
            "version = version + 1" if bump else "version = version", "updated_at = now()"])
        + " WHERE id = $1 AND merchant_id = $2 AND version = $3 RETURNING *",
        account_id, merchant_id, version, *(changes[c] for c in columns),
    )
    if row is None:
        await get(conn, merchant_id, account_id)  # NotFound when it is not this merchant's
        raise StateError("The connector account was changed by another request; retry.",
                         code="connector_account_changed")
    return row


async def disable(conn: asyncpg.Connection, merchant_id: str, account_id: str) -> asyncpg.Record:
    """Disable an account (no new attempt goes to it; what is in flight still settles).

    Returns:
      Its row, disabled (already disabled: unchanged).

    Raises:
      NotFound: no such account for this merchant.
    """
    row = await conn.fetchrow(
        "UPDATE connector_accounts SET status = 'disabled', disabled_at = now(), updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND status = 'active' RETURNING *",
        account_id, merchant_id,
    )
    return row if row is not None else await get(conn, merchant_id, account_id)


async def for_call(conn: asyncpg.Connection, account_id: str) -> asyncpg.Record | None:
    """What a call on an account chosen earlier (an attempt's) needs, whatever its status:
    connector, version, sealed credentials."""
    return await conn.fetchrow(
        "SELECT id, merchant_id, connector, version, credentials_sealed FROM connector_accounts WHERE id = $1",
        account_id,
    )


async def for_webhook(conn: asyncpg.Connection, connector: str, account_id: str) -> asyncpg.Record | None:
    """The sealed webhook secret of an account of ``connector`` (any status: a disabled
    account's in-flight payments still settle by webhook)."""
    return await conn.fetchrow(
        "SELECT id, merchant_id, webhook_secret_sealed, updated_at FROM connector_accounts"
        " WHERE id = $1 AND connector = $2",
        account_id, connector,
    )

