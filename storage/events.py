"""The event log: one row per state change, written in the changing transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from domain import render
from domain.events import NewEvent
from domain.ids import new_id
from telemetry import tracing


# Called inside the appending transaction with the rendered events, so
# projections of the log (realtime messages, outgoing webhook deliveries) are
# committed atomically with the events themselves. Register at import time.
Projection = Callable[[asyncpg.Connection, str, list[dict], list[NewEvent]], Awaitable[None]]
PROJECTIONS: list[Projection] = []


async def _project(conn: asyncpg.Connection, merchant_id: str, rendered: list[dict], events: list[NewEvent]) -> None:
    for projection in PROJECTIONS:
        await projection(conn, merchant_id, rendered, events)


async def append(conn: asyncpg.Connection, merchant_id: str, event: NewEvent) -> dict:
    """Write ``event`` with the merchant's next ``seq`` and return its API form."""
    return (await append_all(conn, merchant_id, [event]))[0]


# One round trip: bump the merchant's seq and insert the events numbered from it.
# The bump row-locks the merchant until commit, so call this last in a
# transaction: the shorter that lock is held, the more payments of one
# merchant commit concurrently.
_APPEND_SQL = """
WITH bump AS (UPDATE merchants SET event_seq = event_seq + $2 WHERE id = $1 RETURNING event_seq)
INSERT INTO events (id, merchant_id, seq, type, object_id, customer_id, data, traceparent)
SELECT e.id, $1, bump.event_seq - $2 + e.ord, e.type, e.object_id, e.customer_id, e.data, e.traceparent
FROM bump, unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[])
     WITH ORDINALITY AS e(id, type, object_id, customer_id, data, traceparent, ord)
RETURNING id, seq, created_at
"""


async def append_all(conn: asyncpg.Connection, merchant_id: str, events: list[NewEvent]) -> list[dict]:
    """Append events with consecutive, gap-free seqs (in list order) and return their API forms."""
    if not events:
        return []
    ids = [new_id("evt") for _ in events]
    # The unit of work's span is current here (the loop thread runs in the caller's context).
    here = tracing.current_traceparent()
    rows = await conn.fetch(
        _APPEND_SQL, merchant_id, len(events), ids, [e.type for e in events], [e.object_id for e in events],
        [e.customer_id for e in events], [e.snapshot for e in events], [e.traceparent or here for e in events],
    )
    stored = {r["id"]: r for r in rows}
    rendered = [
        render.event({"id": i, "type": e.type, "seq": stored[i]["seq"], "created_at": stored[i]["created_at"],
                      "data": e.snapshot})
        for i, e in zip(ids, events)
    ]
    await _project(conn, merchant_id, rendered, events)
    return rendered


async def get(conn: asyncpg.Connection, merchant_id: str, event_id: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM events WHERE id = $1 AND merchant_id = $2", event_id, merchant_id)
    return render.event(row) if row else None


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    type_: str | None, object_id: str | None, after_seq: int | None) -> tuple[list[dict], bool]:
    """Events newest first; with ``after_seq``, oldest first from just after that seq.

    ``after_seq`` is for catching up (a poller replays forward and must not skip),
    so that form pages in ascending order; ``starting_after`` then continues it.
    """
    conds = ["merchant_id = $1"]
    args: list = [merchant_id]

    def add(sql: str, value: object) -> None:
        args.append(value)
        conds.append(sql.format(f"${len(args)}"))

    if type_:
        if type_.endswith(".*"):
            add("type LIKE {}", type_[:-1] + "%")
        else:
            add("type = {}", type_)
    if object_id:
        add("object_id = {}", object_id)
    ascending = after_seq is not None
    if after_seq is not None:
        add("seq > {}", after_seq)
    if starting_after:
        cursor = await conn.fetchval(
            "SELECT seq FROM events WHERE id = $1 AND merchant_id = $2", starting_after, merchant_id
        )
        if cursor is None:
            return [], False
        add("seq > {}" if ascending else "seq < {}", cursor)
    order = "ASC" if ascending else "DESC"
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT * FROM events WHERE {' AND '.join(conds)} ORDER BY seq {order} LIMIT ${len(args)}", *args
    )
    return [render.event(r) for r in rows[:limit]], len(rows) > limit
