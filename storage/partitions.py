"""Partition maintenance of the bounded tables (migration 0015).

Each table is partitioned by a time column into periods named
``<table>_pYYYYMMDD`` plus a ``<table>_default`` partition that catches
anything no period partition covers (rows written before the maintenance
first ran, or a clock far off). :func:`maintain` makes the partitions that
:func:`domain.partitions.plan` asks for — moving rows of their range out of
the default partition in the same transaction — and drops those past their
table's retention. One process at a time does it (an advisory lock); each
change is its own short transaction with a lock timeout, so the tables'
readers and writers wait at most that long; a change whose lock was not
granted in that time is left for the next round (reported as ``busy``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import asyncpg

from domain import partitions as rules
from domain.partitions import Period

log = logging.getLogger("paycast.partitions")
# Names "paycast partition maintenance" among advisory locks.
_LOCK_KEY = 7_412_960_601
# How long DDL waits for a table lock before giving up until the next round.
LOCK_TIMEOUT = "500ms"


@dataclasses.dataclass(frozen=True)
class Table:
    """A bounded table: its name, partition key column and period."""

    name: str
    column: str
    period: Period


EVENTS = Table("events", "created_at", Period.MONTH)
INBOX = Table("webhook_inbox", "received_at", Period.WEEK)
REALTIME = Table("realtime_messages", "created_at", Period.DAY)
ATTEMPTS = Table("webhook_attempts", "created_at", Period.WEEK)
TABLES = (EVENTS, INBOX, REALTIME, ATTEMPTS)


async def existing(conn: asyncpg.Connection, table: Table) -> set[dt.datetime]:
    """Starts of the table's period partitions."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass", table.name,
    )
    starts = (rules.start_of(table.name, r["relname"]) for r in rows)
    return {s for s in starts if s is not None}


async def _unplaced(conn: asyncpg.Connection, table: Table) -> set[dt.datetime]:
    """Starts of the periods of the rows in the default partition (normally none)."""
    rows = await conn.fetch(
        f"SELECT DISTINCT date_trunc($1, {table.column} AT TIME ZONE 'UTC') AS start FROM {table.name}_default",
        str(table.period),
    )
    return {r["start"].replace(tzinfo=dt.timezone.utc) for r in rows}


async def create(conn: asyncpg.Connection, table: Table, start: dt.datetime) -> int:
    """Make the partition starting at ``start``, moving its rows out of the default partition.

    Returns:
      How many rows moved.
    """
    end = rules.step(start, table.period)
    part = rules.name(table.name, start)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # The default partition may not hold rows of the new range when the
        # partition is made; park them, make it, and put them back through the parent.
        await conn.execute(f"CREATE TEMP TABLE paycast_moving (LIKE {table.name}) ON COMMIT DROP")
        await conn.execute(
            f"WITH gone AS (DELETE FROM {table.name}_default WHERE {table.column} >= $1 AND {table.column} < $2"
            " RETURNING *) INSERT INTO paycast_moving SELECT * FROM gone", start, end,
        )
        await conn.execute(
            f"CREATE TABLE {part} PARTITION OF {table.name}"
            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        status = await conn.execute(f"INSERT INTO {table.name} SELECT * FROM paycast_moving")
        moved = int(status.split()[-1])
    return moved


async def drop(conn: asyncpg.Connection, table: Table, start: dt.datetime) -> None:
    """Drop the partition starting at ``start`` (its rows go with it)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {rules.name(table.name, start)}")


async def purge_unplaced(conn: asyncpg.Connection, table: Table, cutoff: dt.datetime) -> int:
    """Delete rows of the default partition older than ``cutoff`` (normally there are none)."""
    status = await conn.execute(f"DELETE FROM {table.name}_default WHERE {table.column} < $1", cutoff)
    return int(status.split()[-1])


async def purge_inbox_keys(conn: asyncpg.Connection, cutoff: dt.datetime) -> int:
    """Forget connector event ids received before ``cutoff`` (the end of the dedup window)."""
    status = await conn.execute("DELETE FROM webhook_inbox_keys WHERE received_at < $1", cutoff)
    return int(status.split()[-1])


async def maintain(conn: asyncpg.Connection, now: dt.datetime, retention: dict[str, dt.timedelta | None],
                   ahead: int) -> dict[str, dict] | None:
    """One round of maintenance for every bounded table.

    Args:
      now: the clock (a parameter so tests can move it).
      retention: per table name, how long rows are kept (None: for ever).
      ahead: periods to have ready after the current one.

    Returns:
      Per table, what was created, dropped and purged, and the partitions
      left ``busy`` (their table's lock not granted within ``LOCK_TIMEOUT``:
      a long transaction was using it; the next round tries again). None
      when another process holds the maintenance lock (it does the work).
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        return None
    report: dict[str, dict] = {}
    try:
        for table in TABLES:
            keep = retention.get(table.name)
            plan = rules.plan(await existing(conn, table), table.period, now, ahead=ahead, retention=keep,
                              unplaced=await _unplaced(conn, table))
            done: dict = {"created": [], "dropped": [], "busy": [], "moved": 0, "purged": 0}
            if plan.cutoff is not None:
                done["purged"] = await purge_unplaced(conn, table, plan.cutoff)
            for start in plan.create:
                try:
                    done["moved"] += await create(conn, table, start)
                except asyncpg.LockNotAvailableError:
                    done["busy"].append(rules.name(table.name, start))
                else:
                    done["created"].append(rules.name(table.name, start))
            for start in plan.drop:
                try:
                    await drop(conn, table, start)
                except asyncpg.LockNotAvailableError:
                    done["busy"].append(rules.name(table.name, start))
                else:
                    done["dropped"].append(rules.name(table.name, start))
            if table is INBOX and plan.cutoff is not None and not done["busy"]:
                # The dedup window: a key lives as long as any inbox row of its time
                # may (partitions are dropped whole, so rows from the start of the
                # cutoff's period on are still there). With any inbox change left
                # busy the keys wait for the next round: a drop left busy keeps
                # older rows too, and one whole round is simpler to reason about.
                done["keys_purged"] = await purge_inbox_keys(conn, rules.floor(plan.cutoff, table.period))
            report[table.name] = done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return report
