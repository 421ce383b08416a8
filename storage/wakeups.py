"""Cross-process wake-ups of background actors (PostgreSQL ``NOTIFY``).

A process that stores work another process does (an ``api`` process storing a
gateway webhook that a ``worker`` applies) tells the workers at once instead
of letting them find it at their next poll. The notification is its own
statement, sent *after* the work's commit: a notifying transaction takes
PostgreSQL's database-wide notify lock at commit, which would serialise the
hot write path's commits, and a wake-up for rows not yet visible
would be wasted. Workers still poll, so a lost notification only costs a
poll interval.
"""

from __future__ import annotations

import asyncpg

from storage.database import single_unit

CHANNEL = "paycast_wake"


@single_unit
async def notify(conn: asyncpg.Connection, topics: list[str]) -> None:
    """Send one notification per topic on :data:`CHANNEL` (one round trip)."""
    await conn.execute("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t", CHANNEL, topics)
