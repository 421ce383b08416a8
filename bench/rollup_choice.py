#!/usr/bin/env python3
"""How the console's counts are kept, measured on the write path (issue 25): the choice behind actor:rollups.

    .venv/bin/python bench/rollup_choice.py [--seconds 10] [--clients 16] [--no-save]

One embedded PostgreSQL in a temp dir; one merchant; ``--clients`` asyncpg
connections each run payment transitions as fast as they can for
``--seconds``. Every transition is the product's shape of unit of work
(docs/architecture.md decision 7): ONE statement that moves a payment with a conditional
update, bumps the merchant's event seq and appends the event. Variants:

- ``log_only``: nothing more. This is the write path with rollups folded from
  the event log by a worker (actor:rollups): the counts cost the write path nothing.
- ``hot_row``: plus one counter row per (merchant, status), -1 old / +1 new,
  in the same statement (the "single hot row per merchant").
- ``slots_16``: plus the same counters spread over 16 slots per status, a random
  slot per transition, summed on read.

Prints transitions/s and p50/p99 per variant (and appends them to
bench/RESULTS.md). Nothing is asserted: a benchmark is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, load_average, machine_facts  # noqa: E402

PAYMENTS = 20_000
STATUSES = ("processing", "succeeded")
SLOTS = 16

SCHEMA = """
CREATE TABLE m (id text PRIMARY KEY, event_seq bigint NOT NULL DEFAULT 0);
CREATE TABLE p (id bigint PRIMARY KEY, merchant_id text NOT NULL, status text NOT NULL);
CREATE TABLE e (merchant_id text NOT NULL, seq bigint NOT NULL, object_id bigint NOT NULL, data jsonb NOT NULL,
                PRIMARY KEY (merchant_id, seq));
CREATE TABLE c (merchant_id text NOT NULL, slot int NOT NULL, status text NOT NULL, n bigint NOT NULL,
                PRIMARY KEY (merchant_id, slot, status));
INSERT INTO m VALUES ('m1');
"""

# $1 merchant, $2 payment, $3 old status, $4 new status, $5 slot (the counters' CTE only)
_MOVE = ("WITH moved AS (UPDATE p SET status = $4 WHERE id = $2 AND status = $3 RETURNING id),"
         " bump AS (UPDATE m SET event_seq = event_seq + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM moved)"
         "          RETURNING event_seq),"
         " ev AS (INSERT INTO e SELECT $1, bump.event_seq, $2, jsonb_build_object('status', $4::text) FROM bump"
         "        RETURNING 1)")
# Counters after the bump (the lock order of every unit of work), the two statuses in one fixed order.
_COUNT = (", counted AS (INSERT INTO c (merchant_id, slot, status, n)"
          " SELECT $1, $5, s.status, s.n FROM bump, (VALUES ($3::text, -1), ($4::text, 1)) s(status, n)"
          " ORDER BY s.status ON CONFLICT (merchant_id, slot, status) DO UPDATE SET n = c.n + EXCLUDED.n"
          " RETURNING 1)")
VARIANTS = {
    "log_only": (_MOVE + " SELECT count(*) FROM ev", None),
    "hot_row": (_MOVE + _COUNT + " SELECT count(*) FROM ev", 1),
    "slots_16": (_MOVE + _COUNT + " SELECT count(*) FROM ev", SLOTS),
}


async def _client(dsn: str, sql: str, slots: int | None, ids: list[int], until: float, out: list[float]) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    rng = random.Random()
    current = {i: STATUSES[0] for i in ids}  # every payment starts `processing` (see _variant)
    try:
        stmt = await conn.prepare(sql)
        for i in ids:  # each move flips a payment between the two statuses: always a real transition
            if time.perf_counter() > until:
                return
            old = current[i]
            new = STATUSES[1] if old == STATUSES[0] else STATUSES[0]
            args = ["m1", i, old, new] + ([rng.randrange(slots)] if slots else [])
            started = time.perf_counter()
            assert await stmt.fetchval(*args) == 1
            out.append(time.perf_counter() - started)
            current[i] = new
    finally:
        await conn.close()


async def _variant(dsn: str, name: str, clients: int, seconds: float) -> dict:
    import asyncpg

    sql, slots = VARIANTS[name]
    conn = await asyncpg.connect(dsn)
    await conn.execute("TRUNCATE p, e, c; UPDATE m SET event_seq = 0")
    await conn.execute("INSERT INTO p SELECT g, 'm1', 'processing' FROM generate_series(1, $1) g", PAYMENTS)
    await conn.close()
    latencies: list[float] = []
    ids = list(range(1, PAYMENTS + 1))
    random.shuffle(ids)
    # Each client cycles over its own share of the payments, so two never move one payment at once.
    shares = [ids[k::clients] * 50 for k in range(clients)]
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_client(dsn, sql, slots, share, until, latencies) for share in shares))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"name": name, "tps": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def _table(results: dict[str, list[dict]]) -> str:
    """Best round of each variant, and its throughput relative to ``log_only``."""
    best = {name: max(rs, key=lambda r: r["tps"]) for name, rs in results.items()}
    lines = ["| variant | transitions/s (best of rounds) | p50 ms | p99 ms | vs log_only |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['tps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
              f" {r['tps'] / best['log_only']['tps']:.2f} |" for name, r in best.items()]
    return "\n".join(lines)


def _save(args, table: str) -> None:
    """Append the run to bench/RESULTS.md with its exact command."""
    facts = machine_facts()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join([".venv/bin/python bench/rollup_choice.py", *sys.argv[1:]])
    text = [f"## {when} — rollup_choice.py (issue 25: how the console's counts are kept)", "",
            f"- command: `{command}`",
            f"- machine: nproc={facts['nproc']}, {facts['cpu']}; BUSY: other helpers' tests and benchmarks share"
            f" the cores (load average at the end: {load_average()})",
            f"- {args.clients} asyncpg clients, one merchant, {args.seconds:g} s per variant, {args.rounds} rounds"
            " interleaved; embedded PostgreSQL in a temp dir", "", table, "", ""]
    with RESULTS.open("a") as f:
        f.write("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="variants run interleaved this many times (2)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    from pg.cluster import EmbeddedPostgres

    tmp = tempfile.mkdtemp(prefix="paycast-rollup-choice-", dir="/tmp")
    pg = EmbeddedPostgres(pathlib.Path(tmp))
    pg.start()
    try:
        pg.ensure_database("choice")
        dsn = pg.dsn("choice")

        async def setup() -> None:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            await conn.execute(SCHEMA)
            await conn.close()

        asyncio.run(setup())
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                r = asyncio.run(_variant(dsn, name, args.clients, args.seconds))
                results[name].append(r)
                print(f"  {name:9} {r['tps']:8,.0f}/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table = _table(results)
    print(table)
    if not args.no_save:
        _save(args, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
