"""Leases taken over during a chaos run, read from the database.

Right after a process is killed or stopped, :func:`snapshot` reads the inbox
and outgoing-delivery rows still leased (by whichever process: with roles, only
the worker leases; with ``--workers``, the other children's rows are there
too and resolve without a takeover). A
:class:`Watch` then samples those rows until each is resolved:

- an inbox row is *taken over* when it is claimed again (its ``tries`` goes
  up: every claim counts one), and resolved without a takeover when it is
  processed under the claim it had;
- a delivery is taken over when it shows another claim token, or is finished
  after its lease ran out (nobody else may claim it before); finished before
  that, its holder did it.

Time to takeover is the database's clock from the fault to the first sample
that shows it (samples every :data:`SAMPLE_S`). Rows leased by processes that
kept running resolve without a takeover, so the count is about the victim.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib
from dataclasses import dataclass, field

import trio

SAMPLE_S = 0.25

HELD_SQL = {
    "inbox": "SELECT id, tries::text AS claim, claimed_until, now() AS at FROM webhook_inbox"
             " WHERE processed_at IS NULL AND claimed_until > now()",
    "delivery": "SELECT id, claim_token AS claim, claimed_until, now() AS at FROM webhook_deliveries"
                " WHERE status = 'pending' AND claim_token IS NOT NULL AND claimed_until > now()",
}
NOW_SQL = {
    "inbox": "SELECT id, tries::text AS claim, processed_at IS NOT NULL AS done, processed_at AS done_at, now() AS at"
             " FROM webhook_inbox WHERE id = ANY($1::text[])",
    "delivery": "SELECT id, claim_token AS claim, status <> 'pending' OR claim_token IS NULL AS done,"
                " updated_at AS done_at, now() AS at FROM webhook_deliveries WHERE id = ANY($1::text[])",
}


def query(data_dir: pathlib.Path, sql: str, *args) -> list:
    """One statement against the run's embedded PostgreSQL (from a thread)."""
    import asyncpg

    from pg.cluster import EmbeddedPostgres

    async def main():
        conn = await asyncpg.connect(EmbeddedPostgres(data_dir).dsn("paycast"), timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(main())


@dataclass
class Held:
    """Rows leased when ``fault`` happened, and what became of them."""

    fault: str
    at: dt.datetime | None = None
    # kind → row id → (claim when the fault happened, lease end)
    rows: dict[str, dict[str, tuple[str, dt.datetime]]] = field(default_factory=dict)
    taken: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, id) → seconds to takeover
    resolved: set[tuple[str, str]] = field(default_factory=set)

    def count(self, kind: str) -> int:
        return len(self.rows.get(kind, {}))


def snapshot(data_dir: pathlib.Path, fault: str) -> Held:
    """The rows leased right now (the database may be down: then nothing is recorded)."""
    held = Held(fault)
    try:
        for kind, sql in HELD_SQL.items():
            rows = query(data_dir, sql)
            held.rows[kind] = {r["id"]: (r["claim"], r["claimed_until"]) for r in rows}
            if held.at is None:
                held.at = query(data_dir, "SELECT now() AS at")[0]["at"]
    except Exception:  # noqa: BLE001 - a fault during a database outage: nothing to follow
        held.rows = {}
    return held


def sample(data_dir: pathlib.Path, held: Held) -> None:
    """One look at the rows of ``held`` still unresolved."""
    for kind, rows in held.rows.items():
        open_ids = [i for i in rows if (kind, i) not in held.resolved]
        if not open_ids or held.at is None:
            continue
        for r in query(data_dir, NOW_SQL[kind], open_ids):
            claim, lease_end = rows[r["id"]]
            key = (kind, r["id"])
            if kind == "inbox":
                taken = int(r["claim"]) > int(claim)
            else:
                taken = (r["claim"] is not None and r["claim"] != claim) or (r["done"] and r["done_at"] > lease_end)
            if taken:
                held.taken[key] = max(0.0, (r["at"] - held.at).total_seconds())
            if taken or r["done"]:
                held.resolved.add(key)


class Watch:
    """Follows every :class:`Held` of a run in the background (``actor``-style: :meth:`run` in a nursery)."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        self.held: list[Held] = []

    async def record(self, fault: str) -> Held:
        held = await trio.to_thread.run_sync(snapshot, self.data_dir, fault)
        self.held.append(held)
        return held

    async def run(self) -> None:
        while True:
            await trio.sleep(SAMPLE_S)
            for held in self.held:
                try:
                    await trio.to_thread.run_sync(sample, self.data_dir, held)
                except Exception:  # noqa: BLE001 - the database may be restarting: look again later
                    pass

    def rows(self) -> list[tuple[str, object]]:
        """The closing table's lines."""
        held = {k: sum(h.count(k) for h in self.held) for k in HELD_SQL}
        taken = {k: [s for h in self.held for (kind, _), s in h.taken.items() if kind == k] for k in HELD_SQL}
        longest = {k: max(seconds, default=0.0) for k, seconds in taken.items()}
        return [
            ("leases held at process faults (inbox / delivery)", f"{held['inbox']} / {held['delivery']}"),
            ("leases taken over (inbox / delivery)", f"{len(taken['inbox'])} / {len(taken['delivery'])}"),
            ("longest time to takeover, s (inbox / delivery)", f"{longest['inbox']:.1f} / {longest['delivery']:.1f}"),
        ]
