"""The console's rollups (migration 0025), folded from the event log.

:func:`fold` is the unit of work of ``actor:rollups``: it takes the next
stretch of one merchant's event log after that merchant's cursor, folds the
payment snapshots into ``stats_rollups`` (domain/rollups.py) and moves the
cursor, in one transaction. Event seqs are gap-free and visible in order (the
appending transaction holds the merchant's seq row until it commits), so the
stretch up to the merchant's committed ``event_seq`` is complete, and a fold
interrupted anywhere leaves rollups and cursor as they were. A merchant with
no cursor row (new, or its cursor deleted by an operator: docs/operations.md) has its rollups
rebuilt from seq 0.

Several worker processes may run the actor: a merchant's cursor row is
locked ``FOR UPDATE SKIP LOCKED``, so one of them folds it at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import asyncpg

from domain import rollups

# Events folded per transaction: bounds a fold's time and memory, not its result.
BATCH = 5000


class Folded(NamedTuple):
    """What one :func:`fold` did: ``moved`` events folded, the cursor now at ``head``, and
    each payment of the stretch as its events up to ``head`` show it (:func:`domain.rollups.merge`)."""

    moved: int
    head: int
    snapshots: dict[str, dict]


class Known:
    """Payment snapshots as this process's folds of a merchant left them, kept between folds.

    A payment's snapshot up to the cursor is what :func:`_previous` reads from the
    event log (a statement over all its earlier events) when the payment shows up
    again in a later stretch — for every payment outcome that arrives after the
    payment was folded. The snapshots kept here are that same merge, so a fold
    that finds them reads only the payments it does not know.

    Valid for a merchant only while its cursor is still the seq the kept snapshots
    end at: a fold by another process in between (several workers), a rebuild
    (cursor back to 0) or a fold whose commit failed (:meth:`keep` is called after
    commit only) leaves another cursor, and the merchant's snapshots are dropped.
    Bounded: ``limit`` snapshots in all (about a kilobyte each), the least recently
    folded payments of the least recently folded merchants going first; what is
    not kept is read from the log, as without it.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._size = 0
        self._by_merchant: OrderedDict[str, tuple[int, OrderedDict[str, dict]]] = OrderedDict()

    def at(self, merchant_id: str, cursor: int) -> dict[str, dict]:
        """The merchant's snapshots if they end at ``cursor``, else none (and they are dropped)."""
        kept = self._by_merchant.get(merchant_id)
        if kept is not None and kept[0] == cursor:
            return kept[1]
        if kept is not None:
            del self._by_merchant[merchant_id]
            self._size -= len(kept[1])
        return {}

    def keep(self, merchant_id: str, folded: Folded) -> None:
        """After the fold's commit: its snapshots, now ending at its head."""
        kept = self._by_merchant.pop(merchant_id, None)
        states = kept[1] if kept is not None else OrderedDict()
        for object_id, snapshot in folded.snapshots.items():
            self._size += object_id not in states
            states[object_id] = snapshot
            states.move_to_end(object_id)
        self._by_merchant[merchant_id] = (folded.head, states)  # now the most recently folded
        while self._size > self._limit:
            oldest_id, (_, oldest) = next(iter(self._by_merchant.items()))
            oldest.popitem(last=False)
            self._size -= 1
            if not oldest:
                del self._by_merchant[oldest_id]

    def __len__(self) -> int:
        return self._size


async def behind(conn: asyncpg.Connection, limit: int) -> list[str]:
    """Merchants whose event log is ahead of their rollups (or who have none yet), most behind first.

    The merchants table is global and small (docs/architecture.md decision 10); its ``event_seq``
    is the committed head of each log.
    """
    rows = await conn.fetch(
        "SELECT m.id FROM merchants m LEFT JOIN stats_cursors c ON c.merchant_id = m.id"
        " WHERE c.merchant_id IS NULL OR m.event_seq > c.seq"
        " ORDER BY m.event_seq - coalesce(c.seq, 0) DESC LIMIT $1",
        limit,
    )
    return [r["id"] for r in rows]


async def _claim(conn: asyncpg.Connection, merchant_id: str) -> int | None:
    """Lock the merchant's cursor and return its seq; create it (and clear old rollups) when missing.

    Returns:
      The seq the rollups include, or None when another process is folding this merchant.
    """
    seq = await conn.fetchval("SELECT seq FROM stats_cursors WHERE merchant_id = $1 FOR UPDATE SKIP LOCKED",
                              merchant_id)
    if seq is not None:
        return seq
    created = await conn.fetchval(
        "INSERT INTO stats_cursors (merchant_id, seq) VALUES ($1, 0) ON CONFLICT (merchant_id) DO NOTHING"
        " RETURNING seq", merchant_id)
    if created is None:
        return None  # it exists and someone holds it
    # No cursor: whatever rollups are left (a partial loss) are rebuilt from the start of the log.
    await conn.execute("DELETE FROM stats_rollups WHERE merchant_id = $1", merchant_id)
    return 0


async def _previous(conn: asyncpg.Connection, merchant_id: str, object_ids: list[str], before_seq: int) -> dict:
    """What the events up to ``before_seq`` show of each payment (domain.rollups.merge of them all)."""
    if not object_ids:
        return {}
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (e.object_id) e.object_id, e.data->>'status' AS status,
               e.data->>'created_at' AS created_at,
               -- every attempt any earlier event showed, as the latest one showing it (domain.rollups.merge)
               (SELECT jsonb_agg(seen.attempt) FROM (
                   SELECT DISTINCT ON (attempt->>'id') attempt
                   FROM events earlier, jsonb_array_elements(earlier.data->'attempts') attempt
                   WHERE earlier.merchant_id = $1 AND earlier.object_id = e.object_id
                     AND earlier.seq <= $3 AND earlier.type LIKE 'payment.%'
                   ORDER BY attempt->>'id', earlier.seq DESC) seen) AS attempts
        FROM events e
        WHERE e.merchant_id = $1 AND e.object_id = ANY($2::text[]) AND e.seq <= $3 AND e.type LIKE 'payment.%'
        ORDER BY e.object_id, e.seq DESC""",
        merchant_id, object_ids, before_seq,
    )
    return {r["object_id"]: dict(r) for r in rows}


async def fold(conn: asyncpg.Connection, merchant_id: str, batch: int = BATCH, known: Known | None = None) -> Folded:
    """Fold up to ``batch`` events of the merchant's log after its cursor (one transaction).

    Args:
      known: this process's snapshots from its earlier folds; only read here (the
        caller keeps the result's after commit).

    Returns:
      What was folded; ``moved`` 0: up to date, or another process holds the merchant.
    """
    cursor = await _claim(conn, merchant_id)
    if cursor is None:
        return Folded(0, 0, {})
    # One statement, so the head and the events are read from one snapshot.
    rows = await conn.fetch(
        "WITH head AS (SELECT least(event_seq, $2::bigint + $3::bigint) AS seq FROM merchants WHERE id = $1)"
        " SELECT head.seq AS head, e.seq, e.type, e.object_id, e.data->>'status' AS status,"
        " e.data->>'created_at' AS created_at, e.data->'attempts' AS attempts"
        " FROM head LEFT JOIN events e ON e.merchant_id = $1 AND e.seq > $2 AND e.seq <= head.seq"
        " AND e.type LIKE 'payment.%' ORDER BY e.seq",
        merchant_id, cursor, batch,
    )
    if not rows or rows[0]["head"] <= cursor:
        return Folded(0, cursor, {})
    head = rows[0]["head"]
    events = [r for r in rows if r["seq"] is not None]
    # Payments whose previous snapshot is before this stretch: their first event here is not their creation.
    first: dict[str, str] = {}
    for e in events:
        first.setdefault(e["object_id"], e["type"])
    kept = known.at(merchant_id, cursor) if known is not None else {}
    earlier = [o for o, t in first.items() if t != "payment.created"]
    outside = {o: kept[o] for o in earlier if o in kept}
    outside.update(await _previous(conn, merchant_id, [o for o in earlier if o not in outside], cursor))
    # Each event with what its payment's earlier events showed, and the attempts that enter (or,
    # out of order, leave) the latency rows in the stretch: their latency is read once for all.
    last: dict[str, dict] = dict(outside)
    steps: list[tuple[dict | None, asyncpg.Record]] = []
    timed: list[str] = []
    for e in events:
        previous = last.get(e["object_id"])
        steps.append((previous, e))
        timed += rollups.timing_changes(previous, e)
        last[e["object_id"]] = rollups.merge(previous, e)
    latency_of = {}
    if timed:
        latency_of = {r["id"]: r["latency_ms"] for r in await conn.fetch(
            "SELECT id, latency_ms FROM payment_attempts WHERE merchant_id = $1 AND id = ANY($2::text[])",
            merchant_id, timed)}
    tally = rollups.Tally()
    for previous, e in steps:
        tally.fold(previous, e, latency_of)
    await _write(conn, merchant_id, tally.rows(), head)
    return Folded(head - cursor, head, {o: last[o] for o in first})


async def _write(conn: asyncpg.Connection, merchant_id: str, rows: list[tuple], head: int) -> None:
    """Add the tallied counts to the rollups and move the cursor to ``head``, in one statement."""
    columns = list(zip(*rows)) if rows else [[], [], [], [], [], []]
    await conn.execute(
        "WITH added AS ("
        " INSERT INTO stats_rollups AS r (merchant_id, period_s, bucket, dimension, connector, status, n)"
        " SELECT $1, * FROM unnest($2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::bigint[])"
        " ON CONFLICT (merchant_id, period_s, bucket, dimension, connector, status)"
        " DO UPDATE SET n = r.n + EXCLUDED.n)"
        " UPDATE stats_cursors SET seq = $8, updated_at = now() WHERE merchant_id = $1",
        merchant_id, *[list(c) for c in columns], head,
    )


async def lag(conn: asyncpg.Connection, merchant_id: str) -> int:
    """How many events of the merchant's log the rollups do not include yet."""
    return await conn.fetchval(
        "SELECT m.event_seq - coalesce(c.seq, 0) FROM merchants m"
        " LEFT JOIN stats_cursors c ON c.merchant_id = m.id WHERE m.id = $1", merchant_id) or 0


async def drop_lost(conn: asyncpg.Connection) -> int:
    """Drop the cursor of every merchant whose rollups are gone though its cursor moved past payments.

    A cursor past seq 0 with no all-time row while the merchant has payments
    means the rows were lost (deleted, restored from an older backup): the
    next fold rebuilds them from the log.

    Returns:
      How many merchants will be rebuilt.
    """
    result = await conn.execute(
        "DELETE FROM stats_cursors c WHERE c.seq > 0"
        " AND NOT EXISTS (SELECT 1 FROM stats_rollups r WHERE r.merchant_id = c.merchant_id AND r.period_s = 0)"
        " AND EXISTS (SELECT 1 FROM payments p WHERE p.merchant_id = c.merchant_id)")
    return int(result.split()[-1])
