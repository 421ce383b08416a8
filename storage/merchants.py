"""Merchants and their API keys (stored as SHA-256 hashes only)."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from domain import render
from domain.ids import new_id
from storage.database import single_unit


def hash_key(api_key: str) -> str:
    """The stored form of an API key. Keys carry 192 random bits, so a plain
    SHA-256 (no slow KDF) is enough: there is nothing to brute-force."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "sk_test_" + secrets.token_urlsafe(24)


async def create(conn: asyncpg.Connection, name: str) -> tuple[dict, str]:
    """Create a merchant; returns its API form and the clear API key (shown once)."""
    api_key = new_api_key()
    row = await conn.fetchrow(
        "INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, $2, $3) RETURNING *",
        new_id("mer"), name, hash_key(api_key),
    )
    return render.merchant(row), api_key


@single_unit
async def by_key_hash(conn: asyncpg.Connection, key_hash: str) -> dict | None:
    row = await conn.fetchrow("SELECT id, name, created_at FROM merchants WHERE api_key_hash = $1", key_hash)
    return dict(row) if row else None


@single_unit
async def routing(conn: asyncpg.Connection, merchant_id: str) -> dict | None:
    """The merchant's stored routing policy (``PUT /v1/routing``), or ``None``."""
    return await conn.fetchval("SELECT routing FROM merchants WHERE id = $1", merchant_id)


@single_unit
async def set_routing(conn: asyncpg.Connection, merchant_id: str, routing: dict) -> None:
    await conn.execute("UPDATE merchants SET routing = $2 WHERE id = $1", merchant_id, routing)
