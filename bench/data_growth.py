#!/usr/bin/env python3
"""Every read and write measure on a fresh database and on one holding N more payments, in one run (issue 25).

    .venv/bin/python bench/data_growth.py --payments 1000000 [--duration 10] [--rounds 2] [--no-save]

One embedded PostgreSQL (or ``--dsn``) holds two databases, each with its own
``run.py serve`` (role ``all``, so ``actor:rollups`` runs in it): *fresh* and
*loaded*. Steps:

1. On both: merchants and a little real traffic through the API (a customer's
   payments, refunds), whose ids the read measures look up.
2. On *loaded*, N succeeded payments for one merchant the way the product
   stores them: one real payment's rows (payment, attempt, its
   ``payment.created`` and ``payment.succeeded`` events) cloned by bulk SQL
   with new ids, spread over the last ``--span-days``, ``--customers``
   distinct customers, the merchant's event seqs taken in order. Then the time
   ``actor:rollups`` takes to fold the new events, and ``VACUUM ANALYZE``.
3. One unmeasured pass of every read on both (``--warm-s`` each; 0 skips it): a
   loaded database larger than memory is otherwise read from disk by the first
   round only. Then every measure (wrk, 1 thread, ``--connections``; warm-up then
   ``--duration``), on *fresh* and on *loaded* one after the other, endpoint by
   endpoint, ``--rounds`` times (the order alternating): the console's overview
   and charts, search by payment / customer / connector transaction id, the
   payment lists (newest, by customer, by status), the event log, the list
   behind a counter, ``/healthz`` (a control that does not touch the data),
   and the writes (``"confirm": true``; create → confirm at 1 merchant and
   spread over 8). Interleaving makes the ratio loaded ÷ fresh comparable on a
   machine whose other load changes by the minute. Plus the overview's
   database time per call: its statements timed on a direct connection
   (median and p99 of 200 calls) on each database.
4. The table prints both, averaged over the rounds, and the ratios; it goes to
   bench/RESULTS.md with the command.

``--recent-baseline`` loads the fresh database with the load's last day too
(N / ``--span-days`` payments over 24 h): both then hold the same recent data
and differ only by the older history. Without it the fresh database's charts
are nearly empty (the bench's own minutes of traffic), and a chart's ratio
compares a full window with an empty one rather than a large store with a small
one (bench/RESULTS.md, the 10M run).

Nothing is asserted: a benchmark is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_compare import PAYCAST_ENV, create_confirm_lua  # noqa: E402
from bench.bench_compare import payment_body as write_body  # noqa: E402
from bench.common import (  # noqa: E402
    Scenario, add_common_arguments, add_save_arguments, append_results, fmt_ms, parse_server_env, resolve_generator,
    run_wrk, session,
)

CHUNK = 100_000  # payments per bulk transaction
OVERVIEW_CALLS = 200
MERCHANTS_FOR_CONTENTION = 8


# --------------------------------------------------------------------------- the measures


def measures(keys: list[str], ids: dict) -> list[Scenario]:
    """Every read and write measure, with the ids the reads look up."""
    auth = {"Authorization": f"Bearer {keys[0]}", "Content-Type": "application/json"}

    def get(name: str, path: str) -> Scenario:
        return Scenario(name, "GET", path, 200, auth)

    return [
        get("overview", "/v1/stats/overview"),
        get("stats_1h", "/v1/stats/payments?window=1h"),
        get("stats_24h", "/v1/stats/payments?window=24h"),
        get("search_txn", f"/v1/search?q={ids['txn']}"),
        get("search_customer", f"/v1/search?q={ids['customer']}"),
        get("search_payment", f"/v1/search?q={ids['payment']}"),
        get("payments", "/v1/payments?limit=10"),
        get("payments_customer", f"/v1/payments?limit=10&customer_id={ids['customer']}"),
        get("payments_status", "/v1/payments?limit=10&status=succeeded"),
        get("events", "/v1/events?limit=10"),
        get("list_overdue", "/v1/stats/lists/processing_overdue?limit=10"),
        get("healthz (control)", "/healthz"),
        Scenario("confirm_true", "POST", "/v1/payments", 201, auth, write_body(confirm=True)),
        Scenario("create_confirm", "POST", "/v1/payments", 200, auth, lua=create_confirm_lua(keys[:1], False)),
        Scenario("create_confirm_8m", "POST", "/v1/payments", 200, auth, lua=create_confirm_lua(keys, False)),
    ]


def seed(server, key: str) -> dict:
    """A little real traffic; returns the ids the reads look up and the template payment."""
    card = {"type": "card", "card": {"number": "4242424242424242"}}
    with server.client(key) as c:
        made = []
        for i in range(20):
            r = c.post("/v1/payments", json={"amount": 1000 + i, "currency": "INR", "payment_method": card,
                                             "confirm": True, "customer_id": "cus_growth"})
            assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text
            made.append(r.json())
        for p in made[:3]:
            assert c.post("/v1/refunds", json={"payment_id": p["id"], "amount": 100}).status_code == 201
    template = made[-1]
    return {"payment": made[0]["id"], "customer": "cus_growth", "txn": made[1]["attempts"][0]["connector_txn_id"],
            "template": template["id"]}


class _Explained:
    """A connection that runs every statement twice: under ``EXPLAIN (ANALYZE)`` first, adding the
    server's own planning + execution time to :attr:`server_ms`, then for real (the caller's result)."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.server_ms = 0.0

    async def _explain(self, sql: str, args) -> None:
        plan = await self._conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
        plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
        self.server_ms += plan["Planning Time"] + plan["Execution Time"]

    async def fetch(self, sql: str, *args):
        await self._explain(sql, args)
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args):
        await self._explain(sql, args)
        return await self._conn.fetchrow(sql, *args)


async def _overview_db_time(dsn: str, merchant_id: str) -> dict:
    """The overview's two statements (storage/stats.py), ``OVERVIEW_CALLS`` times on a direct connection.

    Returns:
      ``{"median_ms", "p99_ms"}`` of the database's own time per call (planning + execution, from
      ``EXPLAIN ANALYZE``: what the goal "≤ 5 ms of database time" is about), and ``wall_median_ms``,
      ``wall_p99_ms`` of the round trips as this client saw them (its own scheduling on a busy
      machine included).
    """
    import asyncpg

    from storage import stats
    from storage.database import _init_connection

    conn = await asyncpg.connect(dsn)
    try:
        await _init_connection(conn)
        server, wall = [], []
        for _ in range(OVERVIEW_CALLS):
            explained = _Explained(conn)
            async with conn.transaction():
                await stats.overview_counts(explained, merchant_id, 30.0)
                await stats.connector_window(explained, merchant_id, 3600, 60)
            server.append(explained.server_ms)
            started = time.perf_counter()
            async with conn.transaction():
                await stats.overview_counts(conn, merchant_id, 30.0)
                await stats.connector_window(conn, merchant_id, 3600, 60)
            wall.append((time.perf_counter() - started) * 1000)

        def p99(values: list[float]) -> float:
            return sorted(values)[int(len(values) * 0.99) - 1]

        return {"median_ms": statistics.median(server), "p99_ms": p99(server),
                "wall_median_ms": statistics.median(wall), "wall_p99_ms": p99(wall)}
    finally:
        await conn.close()


class Target:
    """One server with its database, merchants and the measures' ids."""

    def __init__(self, name: str, server, dsn: str) -> None:
        self.name, self.server, self.dsn = name, server, dsn
        self.keys = [server.create_merchant(f"growth {i}") for i in range(MERCHANTS_FOR_CONTENTION)]
        self.ids = seed(server, self.keys[0])
        self.merchant_id = _run(_merchant_id(dsn, self.ids["payment"]))
        self.scenarios = {sc.name: sc for sc in measures(self.keys, self.ids)}
        self.results: dict[str, list[dict]] = {name: [] for name in self.scenarios}
        self.results["overview_db"] = []

    def keep_only(self, names: list[str]) -> None:
        """Measure only ``names`` (the overview's database time is always taken)."""
        unknown = set(names) - set(self.scenarios)
        if unknown:
            raise SystemExit(f"unknown measures {sorted(unknown)}; known: {sorted(self.scenarios)}")
        self.scenarios = {name: sc for name, sc in self.scenarios.items() if name in names}
        self.results = {name: [] for name in self.scenarios} | {"overview_db": []}

    def measure(self, name: str, connections: int, duration: float, warmup: float, workdir: pathlib.Path) -> None:
        scenario = self.scenarios[name]
        register = lambda proc: None  # noqa: E731 - the session's own cleanup covers wrk
        if warmup > 0:
            run_wrk(self.server.url, scenario, connections, warmup, workdir, register)
        r = run_wrk(self.server.url, scenario, connections, duration, workdir, register)
        r["rps"] = r["requests"] / r["duration_s"]
        self.results[name].append(r)
        print(f"  {self.name:6} {name:18} {r['rps']:8,.0f}/s  p50 {fmt_ms(r['p50_ms'])} ms"
              f"  p99 {fmt_ms(r['p99_ms'])} ms  unexpected {r['bad']} {r['bad_codes'] or ''} socket errors {r['socket_errors']}", flush=True)

    def measure_db_time(self) -> None:
        t = _run(_overview_db_time(self.dsn, self.merchant_id))
        print(f"  {self.name:6} overview DB time per call (EXPLAIN ANALYZE): median {t['median_ms']:.2f} ms,"
              f" p99 {t['p99_ms']:.2f} ms; round trips seen by the client: median {t['wall_median_ms']:.2f} ms,"
              f" p99 {t['wall_p99_ms']:.2f} ms", flush=True)
        self.results["overview_db"].append(t)


def warm(targets: list[Target], connections: int, seconds: float, workdir: pathlib.Path) -> None:
    """One unmeasured pass of every read measure on each target, before the rounds.

    Why: the first pass over a database larger than memory reads its indexes
    from disk; without this, round 1 measured the loaded database cold and the
    fresh one warm (the 10M run, bench/RESULTS.md 2026-12-06 12:03: p99s of
    half a second in round 1 only). Writes are left out: they would add data.
    """
    for target in targets:
        for name, scenario in target.scenarios.items():
            if scenario.method == "GET":
                run_wrk(target.server.url, scenario, connections, seconds, workdir, lambda proc: None)
        print(f"  {target.name:6} warmed: every read for {seconds:g} s, unmeasured", flush=True)


def run_interleaved(targets: list[Target], rounds: int, connections: int, duration: float, warmup: float,
                    workdir: pathlib.Path) -> None:
    """Each measure on every target in turn, ``rounds`` times, the targets' order reversed every round."""
    names = list(targets[0].scenarios)
    for k in range(rounds):
        print(f"round {k + 1} of {rounds}", flush=True)
        order = targets if k % 2 == 0 else targets[::-1]
        for name in names:
            for target in order:
                target.measure(name, connections, duration, warmup, workdir)
        for target in order:
            target.measure_db_time()


# --------------------------------------------------------------------------- the load

# The template payment's rows, cloned with new ids and times. $1 merchant, $2 template payment id,
# $3 first number, $4 count, $5 customers, $6 span seconds, $7 total N (for the spread), $8 first seq.
_CLONE_SQL = """
WITH t AS (SELECT p AS pay, a AS att FROM payments p JOIN payment_attempts a ON a.payment_id = p.id
           WHERE p.id = $2 AND p.merchant_id = $1),
g AS (SELECT n, 'pay_00' || lpad(n::text, 24, '0') AS pid, 'att_00' || lpad(n::text, 24, '0') AS aid,
             'txn_growth_' || n AS txn, 'cus_growth_' || (n % $5) AS cus,
             now() - make_interval(secs => ($7 - n)::float8 * $6 / $7) AS at,
             0.05 + (n % 200) / 100.0 AS latency_ms
      FROM generate_series($3::bigint, $3::bigint + $4 - 1) n),
pays AS (INSERT INTO payments SELECT (jsonb_populate_record(t.pay, jsonb_build_object(
             'id', g.pid, 'customer_id', g.cus, 'created_at', g.at, 'updated_at', g.at,
             'order_id', NULL, 'processing_deadline', NULL))).* FROM t, g RETURNING 1),
atts AS (INSERT INTO payment_attempts SELECT (jsonb_populate_record(t.att, jsonb_build_object(
             'id', g.aid, 'payment_id', g.pid, 'connector_txn_id', g.txn, 'created_at', g.at, 'updated_at', g.at,
             'latency_ms', g.latency_ms))).* FROM t, g RETURNING 1),
tev AS (SELECT type, data, traceparent FROM events WHERE merchant_id = $1 AND object_id = $2
        AND type IN ('payment.created', 'payment.succeeded')),
evs AS (INSERT INTO events (id, merchant_id, seq, type, object_id, customer_id, data, created_at, traceparent)
        SELECT 'evt_00' || lpad((2 * g.n + k)::text, 24, '0'), $1, $8 + 2 * (g.n - $3) + k, e.type, g.pid, g.cus,
               e.data || jsonb_build_object('id', g.pid, 'customer_id', g.cus,
                   'created_at', to_char(g.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'updated_at', to_char(g.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'attempts', CASE WHEN k = 0 THEN e.data->'attempts' ELSE jsonb_build_array(
                       (e.data->'attempts'->0) || jsonb_build_object('id', g.aid, 'connector_txn_id', g.txn,
                       'created_at', to_char(g.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))) END),
               g.at + make_interval(secs => k * g.latency_ms / 1000), e.traceparent
        FROM g, (SELECT *, CASE type WHEN 'payment.created' THEN 0 ELSE 1 END AS k FROM tev) e RETURNING 1)
SELECT (SELECT count(*) FROM pays), (SELECT count(*) FROM atts), (SELECT count(*) FROM evs)
"""


async def _load(dsn: str, merchant_id: str, template: str, total: int, customers: int, span_s: float) -> float:
    """Clone the template payment ``total`` times, CHUNK per transaction; returns seconds taken."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        for first in range(1, total + 1, CHUNK):
            count = min(CHUNK, total - first + 1)
            async with conn.transaction():
                # Take the merchant's next 2 × count seqs first (the lock every appender takes).
                head = await conn.fetchval(
                    "UPDATE merchants SET event_seq = event_seq + $2 WHERE id = $1 RETURNING event_seq",
                    merchant_id, 2 * count)
                made = await conn.fetchrow(_CLONE_SQL, merchant_id, template, first, count, customers, span_s,
                                           total, head - 2 * count + 1, timeout=3600)
            assert list(made) == [count, count, 2 * count], made
            print(f"  loaded {first + count - 1:,} payments ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _wait_rollups(dsn: str, merchant_id: str) -> float:
    """Seconds until actor:rollups has folded the merchant's whole log."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        from storage import rollups

        while (behind := await rollups.lag(conn, merchant_id)) > 0:
            print(f"  rollups: {behind:,} events to fold ({time.perf_counter() - started:.0f} s)", flush=True)
            await asyncio.sleep(5)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _vacuum(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE", timeout=3600)
        return await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await conn.close()


async def _merchant_id(dsn: str, payment_id: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT merchant_id FROM payments WHERE id = $1", payment_id)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- report


def _mean(results: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in results)


def table(fresh: dict, loaded: dict, total: int) -> str:
    head = (f"| measure | fresh req/s | fresh p99 ms | +{total:,} req/s | +{total:,} p99 ms | throughput ratio |"
            " p99 ratio |\n|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, a in fresh.items():
        b = loaded[name]
        if name == "overview_db":
            for label, key in (("overview DB time per call, EXPLAIN ANALYZE (median / p99 ms)", ""),
                               ("overview round trips seen by a client (median / p99 ms)", "wall_")):
                fm, fp = _mean(a, key + "median_ms"), _mean(a, key + "p99_ms")
                lm, lp = _mean(b, key + "median_ms"), _mean(b, key + "p99_ms")
                rows.append(f"| {label} | {fm:.2f} / {fp:.2f} | | {lm:.2f} / {lp:.2f} | | {lm / fm:.2f} (median)"
                            f" | {lp / fp:.2f} |")
            continue
        errors = sum(r["bad"] + r["socket_errors"] for r in a + b)
        label = f"{name} ({errors} errors)" if errors else name
        fr, fp, lr, lp = _mean(a, "rps"), _mean(a, "p99_ms"), _mean(b, "rps"), _mean(b, "p99_ms")
        rows.append(f"| {label} | {fr:,.0f} | {fmt_ms(fp)} | {lr:,.0f} | {fmt_ms(lp)} | {lr / fr:.2f}"
                    f" | {lp / fp:.2f} |")
    return head + "\n" + "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, default_duration=10)
    parser.set_defaults(connections=[32])
    parser.add_argument("--payments", type=int, default=100_000, help="payments to load (100000)")
    parser.add_argument("--customers", type=int, default=50_000, help="distinct customers of the load (50000)")
    parser.add_argument("--span-days", type=float, default=7, help="the load's created_at spread (7 days)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every measure (2)")
    add_save_arguments(parser, server_env_help="extra setting for both servers (repeatable)")
    parser.add_argument("--recent-baseline", action="store_true",
                        help="give the fresh database the load's last day (payments / span-days over 24 h), so"
                             " the two differ only by older history: the charts then compare full windows")
    parser.add_argument("--warm-s", type=float, default=3.0,
                        help="seconds of one unmeasured pass of every read on both databases before the rounds"
                             " (3; 0 skips it)")
    parser.add_argument("--only", nargs="+", metavar="MEASURE",
                        help="run only these measures (e.g. stats_1h stats_24h healthz); default: all")
    args = parser.parse_args()
    generator = resolve_generator(parser)
    connections = args.connections[0]
    server_env = {**PAYCAST_ENV, **parse_server_env(parser, args.server_env)}
    from tests.support import ServerProcess

    with session(args.dsn, server_env, generator, args.duration, args.warmup) as s:
        fresh_dsn = _run(_second_database(s.dsn, "paycast_fresh"))
        fresh_server = ServerProcess(fresh_dsn, **server_env).start(timeout=60)
        try:
            loaded = Target("loaded", s.server, s.dsn)
            fresh = Target("fresh", fresh_server, fresh_dsn)
            for target in (loaded, fresh) if args.only else ():
                target.keep_only(args.only)
            print(f"loading {args.payments:,} payments into the loaded database", flush=True)
            load_s = _run(_load(s.dsn, loaded.merchant_id, loaded.ids["template"], args.payments, args.customers,
                                args.span_days * 86400))
            fold_s = _run(_wait_rollups(s.dsn, loaded.merchant_id))
            print(f"  actor:rollups folded {2 * args.payments:,} events in {fold_s:.0f} s", flush=True)
            if args.recent_baseline:
                recent = recent_payments(args.payments, args.span_days)
                print(f"loading the last day's {recent:,} payments into the fresh database", flush=True)
                _run(_load(fresh_dsn, fresh.merchant_id, fresh.ids["template"], recent,
                           max(1, args.customers // args.span_days), DAY_S))
                _run(_wait_rollups(fresh_dsn, fresh.merchant_id))
            size = _run(_vacuum(s.dsn))
            _run(_vacuum(fresh_dsn))
            print(f"  VACUUM ANALYZE done; loaded database {size}", flush=True)
            if args.warm_s > 0:
                warm([loaded, fresh], connections, args.warm_s, pathlib.Path(s.workdir))
            run_interleaved([fresh, loaded], args.rounds, connections, args.duration, args.warmup,
                            pathlib.Path(s.workdir))
        finally:
            fresh_server.stop()
    text = table(fresh.results, loaded.results, args.payments)
    print(text)
    if not args.no_save:
        append_results("data_growth.py", generator, "", args, [
            f"- load: {args.payments:,} payments (+1 attempt, 2 events each) for one merchant by bulk SQL in"
            f" {load_s:.0f} s; actor:rollups folded their {2 * args.payments:,} events in {fold_s:.0f} s"
            f" (overlapping the load); loaded database after VACUUM ANALYZE: {size}",
            *([f"- --recent-baseline: the fresh database holds the load's last day,"
               f" {recent_payments(args.payments, args.span_days):,} payments over 24 h (the same recent data;"
               f" the loaded one has {args.span_days:g} days of it)"] if args.recent_baseline else []),
            f"- wrk {connections} connections; first one unmeasured pass of every read on both for {args.warm_s:g} s"
            f" each; fresh and loaded servers measured endpoint by endpoint, interleaved,"
            f" {args.rounds} rounds (figures are the rounds' means); create_confirm_8m spreads creates over"
            f" {MERCHANTS_FOR_CONTENTION} merchants (the loaded one among them)",
        ], text)
    return 0


DAY_S = 86400


def recent_payments(total: int, span_days: float) -> int:
    """How many of ``total`` payments spread evenly over ``span_days`` fall in the last day."""
    return max(1, round(total / span_days)) if span_days > 1 else total


async def _second_database(dsn: str, name: str) -> str:
    """A database ``name`` beside ``dsn``'s (created when missing, emptied when there); its DSN."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = dsn.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def _run(coro):
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
