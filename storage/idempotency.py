"""Idempotency keys: claim before executing, store the response after.

A key is claimed with an insert; the claim carries ``locked_until`` so that a
process that dies mid-request does not leave the key answering 409 forever.
Stored responses are kept for at least 24 h (the contract (docs/api.md)); :func:`purge` removes
older ones.
"""

from __future__ import annotations

import dataclasses

import asyncpg

from domain.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from storage.database import single_unit

# Longer than any request may run (ask timeout + connector timeout), so a live
# request's claim is never taken over by a retry.
CLAIM_SECONDS = 60
RETENTION_HOURS = 48


_INSERT_SQL = (
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_until)"
    " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
    " ON CONFLICT (merchant_id, key) DO NOTHING RETURNING true"
)


@dataclasses.dataclass(frozen=True)
class Stored:
    status: int
    body: str


@single_unit
async def claim(conn: asyncpg.Connection, merchant_id: str, key: str, request_hash: str) -> Stored | None:
    """Claim ``key`` for a request, or find its stored response.

    A new key (the usual case) is one statement; a key seen before is read
    under its row lock in a transaction.

    Returns:
      ``None`` when the caller now owns the key and must execute the request;
      the stored response when it completed before.

    Raises:
      IdempotencyKeyInUse: another request with this key is still running.
      IdempotencyKeyReused: the key was used with a different request.
    """
    inserted = await conn.fetchval(_INSERT_SQL, merchant_id, key, request_hash, CLAIM_SECONDS)
    if inserted:
        return None
    async with conn.transaction():
        return await _claim_existing(conn, merchant_id, key, request_hash)


async def _claim_existing(conn: asyncpg.Connection, merchant_id: str, key: str, request_hash: str) -> Stored | None:
    row = await conn.fetchrow(
        "SELECT request_hash, response_status, response_body, locked_until < now() AS expired"
        " FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 FOR UPDATE",
        merchant_id, key,
    )
    if row is None:  # purged between the two statements: claim again
        inserted = await conn.fetchval(_INSERT_SQL, merchant_id, key, request_hash, CLAIM_SECONDS)
        return None if inserted else await _claim_existing(conn, merchant_id, key, request_hash)
    if row["request_hash"] != request_hash:
        raise IdempotencyKeyReused(
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            param="Idempotency-Key",
        )
    if row["response_status"] is not None:
        return Stored(row["response_status"], row["response_body"])
    if not row["expired"]:
        raise IdempotencyKeyInUse(
            "There is currently another in-progress request using this Idempotency-Key; retry later.",
            param="Idempotency-Key",
        )
    await conn.execute(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3)"
        " WHERE merchant_id = $1 AND key = $2", merchant_id, key, CLAIM_SECONDS,
    )
    return None


@single_unit
async def complete(conn: asyncpg.Connection, merchant_id: str, key: str, status: int, body: str) -> None:
    """Store the response of a claimed key."""
    await conn.execute(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4"
        " WHERE merchant_id = $1 AND key = $2", merchant_id, key, status, body,
    )


@single_unit
async def release(conn: asyncpg.Connection, merchant_id: str, key: str) -> None:
    """Forget a claim whose request must not be stored (validation failure, 5xx)."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND response_status IS NULL",
        merchant_id, key,
    )


@single_unit
async def purge(conn: asyncpg.Connection) -> int:
    """Delete stored responses older than the retention; returns how many."""
    result = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)", RETENTION_HOURS
    )
    return int(result.split()[-1])
