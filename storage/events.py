"""The event log: one row per state change, written in the changing transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import asyncpg

from domain import render
from domain.events import NewEvent
from domain.ids import new_id
from storage import webhook_deliveries
from telemetry import tracing


# Called inside the appending transaction with the rendered events, so
# projections of the log that need Python (realtime messages) are committed
# atomically with the events themselves. Outgoing webhook deliveries are not
# here: they are a CTE of the appending statement
# (:func:`storage.webhook_deliveries.projection_cte`).
Projection = Callable[[asyncpg.Connection, str, list[dict], list[NewEvent]], Awaitable[None]]
PROJECTIONS: list[Projection] = []


async def project(conn: asyncpg.Connection, merchant_id: str, rendered: list[dict], events: list[NewEvent]) -> None:
    for projection in PROJECTIONS:
        await projection(conn, merchant_id, rendered, events)


def projected(events: list[NewEvent]) -> bool:
    """Whether appending ``events`` needs a statement of a Python projection after it.

    Only events of a customer's objects reach a projection today (the realtime
    log); an append of other events is complete in its one statement.
    """
    return bool(PROJECTIONS) and any(e.customer_id for e in events)


class Append:
    """The event-log part of a unit of work's single statement.

    Bumps the merchant's ``event_seq`` by the number of events and inserts them
    numbered from it (gap-free: a rolled-back bump is rolled back with them),
    plus their outgoing webhook deliveries; all as CTEs named ``bump``, ``ev``
    and ``deliveries`` that the caller puts into its own ``WITH``. The bump
    row-locks the merchant until commit, for the duration of one statement
    when the unit is one statement.

    Args:
      merchant_id: whose log.
      events: in order; they get consecutive seqs.
      now: their ``created_at`` (the unit's clock, so API forms can be rendered
        before the statement runs).
      first_param: the number of the first ``$n`` these CTEs may use.
      guard: the name of a CTE of the caller's; the events are written only if
        it returned a row (e.g. a conditional update that matched).
    """

    def __init__(self, merchant_id: str, events: list[NewEvent], now: dt.datetime, first_param: int,
                 guard: str | None = None) -> None:
        self.merchant_id, self.events, self.now = merchant_id, events, now
        self.ids = [new_id("evt") for _ in events]
        p = [f"${first_param + i}" for i in range(9)]
        m, n, ids, types, objects, customers, data, created, traces = p
        where = f" AND EXISTS (SELECT 1 FROM {guard})" if guard else ""
        self.sql = (
            f"bump AS (UPDATE merchants SET event_seq = event_seq + {n}::int WHERE id = {m}::text{where}"
            " RETURNING event_seq),"
            f" ev AS (INSERT INTO events (id, merchant_id, seq, type, object_id, customer_id, data, created_at,"
            f" traceparent)"
            f" SELECT e.id, {m}::text, bump.event_seq - {n}::int + e.ord, e.type, e.object_id, e.customer_id, e.data,"
            f" {created}::timestamptz, e.traceparent FROM bump, unnest({ids}::text[], {types}::text[],"
            f" {objects}::text[], {customers}::text[], {data}::jsonb[], {traces}::text[])"
            " WITH ORDINALITY AS e(id, type, object_id, customer_id, data, traceparent, ord)"
            " RETURNING id, seq, type), "
            + webhook_deliveries.projection_cte("ev", first_param + 9)
        )
        # The unit of work's span is current here (the loop thread runs in the caller's context).
        here = tracing.current_traceparent()
        self.args = [merchant_id, len(events), self.ids, [e.type for e in events], [e.object_id for e in events],
                     [e.customer_id for e in events], [e.snapshot for e in events], now,
                     [e.traceparent or here for e in events], merchant_id, *webhook_deliveries.projection_args()]

    def rendered(self, first_seq: int) -> list[dict]:
        """The events' API forms, once the statement returned the first seq."""
        return [render.event({"id": i, "type": e.type, "seq": first_seq + k, "created_at": self.now,
                              "data": e.snapshot})
                for k, (i, e) in enumerate(zip(self.ids, self.events))]


async def append(conn: asyncpg.Connection, merchant_id: str, event: NewEvent) -> dict:
    """Write ``event`` with the merchant's next ``seq`` and return its API form."""
    return (await append_all(conn, merchant_id, [event]))[0]


async def append_all(conn: asyncpg.Connection, merchant_id: str, events: list[NewEvent]) -> list[dict]:
    """Append events with consecutive, gap-free seqs (in list order) and return their API forms.

    One statement (the :class:`Append` CTEs), then the Python projections if
    any applies; call inside the unit's transaction.
    """
    if not events:
        return []
    append = Append(merchant_id, events, dt.datetime.now(dt.timezone.utc), 1)
    first_seq = await conn.fetchval(f"WITH {append.sql} SELECT min(seq) FROM ev", *append.args)
    rendered = append.rendered(first_seq)
    await project(conn, merchant_id, rendered, events)
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
