"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied under an advisory lock.

Several processes may start at once on one database; the advisory lock makes
exactly one of them apply what is missing while the others wait, then find
nothing left to do.
"""

from __future__ import annotations

import pathlib
import re

import asyncpg

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
# An arbitrary constant that names "paycast migrations" among advisory locks.
_LOCK_KEY = 7_412_960_331
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def available() -> list[tuple[int, str, pathlib.Path]]:
    """All migration files as ``(version, name, path)``, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2), path))
    return found


async def apply(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction.

    Returns:
      The names of the migrations applied now.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, path in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(f"{version:04d}_{name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def is_current(conn: asyncpg.Connection) -> bool:
    """True when every migration file is recorded as applied."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return False
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return all(v in done for v, _, _ in available())
