"""The event log: one row per state change, written in the changing transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import asyncpg

from domain import render
from domain.events import NewEvent
from domain.ids import new_id
from storage import webhook_deliveries
from storage.database import commits_of
from storage.sql import q
from telemetry import tracing


class Projection(Protocol):
    """A projection of the event log written by the appending statement itself.

    Outgoing webhook deliveries are one (:func:`storage.webhook_deliveries.projection_cte`,
    always there); the others are given to each :class:`Append` by the unit of
    work, from what the running system registered with the database
    (:class:`storage.database.Commits`, components/__init__.py): today the
    customers' realtime log. Folding them into the statement keeps a unit of
    work at one round trip and holds the merchant's seq row for one statement
    only, whatever the events concern.
    """

    def plan(self, append: "Append") -> "Planned | None":
        """The CTEs this projection adds for ``append``'s events, or None when none concerns it.

        Args:
          append: the events being appended; its CTE ``ev`` returns ``id, seq,
            type`` of each inserted event (nothing when its guard failed), and
            ``data`` too once a projection has planned CTEs.
        """


@dataclasses.dataclass
class Planned:
    """What a projection adds to one appending statement.

    Attributes:
      sql: CTEs (comma-separated, no leading or trailing comma) that read ``ev``,
        with named parameters (:mod:`storage.sql`) of the projection's own prefix.
      args: their parameters, by name.
      output: one SQL expression the statement returns; its value goes to
        :attr:`committed` (e.g. the seqs the CTEs handed out).
      committed: called in the unit of work after the statement ran and wrote
        the events, with ``output``'s value and the events' API forms.
    """

    sql: str
    args: dict[str, object]
    output: str
    committed: Callable[[asyncpg.Connection, object, list[dict]], Awaitable[None]]


class Append:
    """The event-log part of a unit of work's single statement.

    Bumps the merchant's ``event_seq`` by the number of events and inserts them
    numbered from it (gap-free: a rolled-back bump is rolled back with them),
    plus their outgoing webhook deliveries and every given projection; all as
    CTEs named ``bump``, ``ev``, ``deliveries`` and the projections' own, that
    the caller puts into its own ``WITH``. The bump row-locks the merchant
    until commit, for the duration of one statement when the unit is one
    statement; every projection's CTEs read ``ev``, so they run (and lock
    what they write) after the bump, the lock order of every unit of work.

    Its parameters are named ``$ev_…`` (the projections': their own prefix),
    :attr:`args` their values (:mod:`storage.sql`).

    Args:
      merchant_id: whose log.
      events: in order; they get consecutive seqs.
      now: their ``created_at`` (the unit's clock, so API forms can be rendered
        before the statement runs).
      projections: what else the statement writes from the events, in order
        (the unit of work's :func:`storage.database.commits_of`).
      guard: the name of a CTE of the caller's; the events are written only if
        it returned a row (e.g. a conditional update that matched).
    """

    def __init__(self, merchant_id: str, events: list[NewEvent], now: dt.datetime, *,
                 projections: Sequence[Projection] = (), guard: str | None = None) -> None:
        self.merchant_id, self.events, self.now = merchant_id, events, now
        self.ids = [new_id("evt") for _ in events]
        # The unit of work's span is current here (the loop thread runs in the caller's context).
        # Work outside any trace (a background pass, no SDK) starts a new one, so every
        # event's outgoing webhooks carry a traceparent (docs/api.md "Processes and transport", Tracing).
        here = tracing.current_traceparent() or tracing.new_traceparent()
        self.args: dict[str, object] = {
            "ev_merchant": merchant_id, "ev_count": len(events), "ev_ids": self.ids,
            "ev_types": [e.type for e in events], "ev_objects": [e.object_id for e in events],
            "ev_customers": [e.customer_id for e in events], "ev_data": [e.snapshot for e in events],
            "ev_created": now, "ev_traces": [e.traceparent or here for e in events],
            **webhook_deliveries.projection_args(),
        }
        self.planned: list[Planned] = []
        for projection in projections:
            planned = projection.plan(self)
            if planned is not None:
                self.args.update(planned.args)
                self.planned.append(planned)
        where = f" AND EXISTS (SELECT 1 FROM {guard})" if guard else ""
        # The events' data goes back into the statement only for a projection that reads it.
        returning = "id, seq, type, data" if self.planned else "id, seq, type"
        self.sql = (
            "-- the merchant's next seqs: its row is locked until commit\n"
            "bump AS (\n"
            "  UPDATE merchants SET event_seq = event_seq + $ev_count::int\n"
            f"  WHERE id = $ev_merchant::text{where}\n"
            "  RETURNING event_seq),\n"
            "-- the events, numbered from the bumped seq\n"
            "ev AS (\n"
            "  INSERT INTO events (id, merchant_id, seq, type, object_id, customer_id, data, created_at, traceparent)\n"
            "  SELECT e.id, $ev_merchant::text, bump.event_seq - $ev_count::int + e.ord, e.type, e.object_id,\n"
            "    e.customer_id, e.data, $ev_created::timestamptz, e.traceparent\n"
            "  FROM bump, unnest($ev_ids::text[], $ev_types::text[], $ev_objects::text[], $ev_customers::text[],\n"
            "    $ev_data::jsonb[], $ev_traces::text[])\n"
            "    WITH ORDINALITY AS e(id, type, object_id, customer_id, data, traceparent, ord)\n"
            f"  RETURNING {returning}),\n"
            + webhook_deliveries.projection_cte("ev", "$ev_merchant")
            + "".join(",\n" + planned.sql for planned in self.planned)
        )
        # For the caller's final SELECT list: the first event's seq, then the projections' outputs.
        self.columns = "(SELECT min(seq) FROM ev) AS first_seq" + "".join(
            f", {planned.output} AS projected_{k}" for k, planned in enumerate(self.planned))

    def rendered(self, first_seq: int) -> list[dict]:
        """The events' API forms, once the statement returned the first seq."""
        return [render.event({"id": i, "type": e.type, "seq": first_seq + k, "created_at": self.now,
                              "data": e.snapshot})
                for k, (i, e) in enumerate(zip(self.ids, self.events))]

    async def committed(self, conn: asyncpg.Connection, row: Mapping) -> list[dict]:
        """After the statement wrote the events: give each projection its output.

        Args:
          row: the statement's result row (with the columns of :attr:`columns`).

        Returns:
          The events' API forms.
        """
        rendered = self.rendered(row["first_seq"])
        for k, planned in enumerate(self.planned):
            await planned.committed(conn, row[f"projected_{k}"], rendered)
        return rendered


async def append(conn: asyncpg.Connection, merchant_id: str, event: NewEvent) -> dict:
    """Write ``event`` with the merchant's next ``seq`` and return its API form."""
    return (await append_all(conn, merchant_id, [event]))[0]


async def append_all(conn: asyncpg.Connection, merchant_id: str, events: list[NewEvent]) -> list[dict]:
    """Append events with consecutive, gap-free seqs (in list order) and return their API forms.

    One statement (the :class:`Append` CTEs, projections included).
    """
    if not events:
        return []
    append = Append(merchant_id, events, dt.datetime.now(dt.timezone.utc), projections=commits_of(conn).projections)
    statement = q(f"WITH {append.sql}\nSELECT {append.columns}")
    row = await conn.fetchrow(statement.sql, *statement.args(append.args))
    return await append.committed(conn, row)


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
