#!/usr/bin/env python3
"""Paycast signed gateway webhooks acknowledged per second, as a ratio to the bare route in the same run.

    .venv/bin/python bench/bench_webhooks.py [--connections 32 64] [--duration 10]

For each connection count it measures, against one real ``run.py serve``
process on a free port:

  (a) ``GET /healthz``: the HTTP stack alone (hypercorn + quart-trio, no database);
  (b) ``POST /webhooks/mockstripe``: every request a distinct event id with a
      valid ``Stripe-Signature``, so each 200 is a new row committed to
      ``webhook_inbox`` (group commit) before the answer: webhooks/s, p50, p99
      and the number of responses that were not 200.

and prints a markdown table with webhooks/s ÷ bare req/s (goal ≥ 0.5, issue 3).
The webhooks are ``payment_intent.succeeded`` for a few hundred real
``pending@upi`` payments (created first, they stay ``processing``), cycled, so
the inbox processor does realistic work while the webhooks come in: the first
webhook per payment applies, later ones are ignored as late. After each
measured run it reports how many inbox rows were stored and how long the
processor took to drain them (polling ``webhook_inbox`` directly). It never
asserts on timings: a benchmark is a measurement, not a test.

Every request needs its own body and signature, so the requests are signed in
advance (timestamps must be within 300 s of the server clock when sent) and
written to a file that the generated wrk Lua script loads at ``init`` and
cycles through in ``request()``. Database, server, wrk and clean-up come from
bench/common.py. For Paycast against the reference service, see bench_compare.py.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import pathlib
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS, Scenario, add_common_arguments, add_save_arguments, append_results, fmt_ms, parse_server_env,
    resolve_generator, session,
)

GOAL_RATIO = 0.5
CONNECTOR = "mockstripe"
DEFAULT_SECRET = "whsec_dev_mockstripe"
PENDING_PAYMENT = {"amount": 1000, "currency": "INR", "connector": CONNECTOR, "confirm": True,
                   "payment_method": {"type": "upi", "upi": {"vpa": "pending@upi"}}}
DUPLICATE_MARK = '"duplicate":true'


# --------------------------------------------------------------------------- setup


def create_pending_payments(url: str, api_key: str, n: int, workers: int = 8) -> list[tuple[str, str]]:
    """``n`` confirmed ``pending@upi`` payments on mockstripe: [(payment id, connector_txn_id)]."""
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60,
                      limits=httpx.Limits(max_connections=workers)) as client:
        def one(_: int) -> tuple[str, str]:
            r = client.post("/v1/payments", json=PENDING_PAYMENT)
            if r.status_code != 201:
                raise RuntimeError(f"creating a pending payment: {r.status_code} {r.text[:300]}")
            p = r.json()
            attempts = [a for a in p["attempts"] if a["connector"] == CONNECTOR and a["connector_txn_id"]]
            if p["status"] != "processing" or not attempts:
                raise RuntimeError(f"expected a processing payment with a {CONNECTOR} attempt, got {p}")
            return p["id"], attempts[-1]["connector_txn_id"]

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(n)))


def webhook_requests(payments: list[tuple[str, str]], n: int, tag: str, secret: str) -> list[tuple[dict, str]]:
    """``n`` signed ``payment_intent.succeeded`` webhooks with distinct event ids, cycling over ``payments``."""
    from domain import webhooks
    from domain.signatures import stripe_header

    now = int(time.time())
    out = []
    for i in range(n):
        payment_id, txn_id = payments[i % len(payments)]
        body = json.dumps(
            webhooks.build(CONNECTOR, "payment.succeeded", event_id=f"evt_bench_{tag}_{i}", txn_id=txn_id,
                           amount=PENDING_PAYMENT["amount"], currency=PENDING_PAYMENT["currency"], created=now,
                           metadata={"payment_id": payment_id}),
            separators=(",", ":"),
        )
        out.append(({"Stripe-Signature": stripe_header(secret, body.encode(), now)}, body))
    return out


def webhook_scenario(requests: list[tuple[dict, str]]) -> Scenario:
    return Scenario("webhooks", "POST", f"/webhooks/{CONNECTOR}", 200, {"Content-Type": "application/json"},
                    per_request=requests, count_body=DUPLICATE_MARK)


def mockstripe_secret(server_env: dict[str, str]) -> str:
    secrets = server_env.get("PAYCAST_CONNECTOR_SECRETS", "")
    for item in secrets.split(","):
        name, _, value = item.strip().partition("=")
        if name == CONNECTOR and value:
            return value
    return DEFAULT_SECRET


# --------------------------------------------------------------------------- the inbox, directly


def db_value(dsn: str, sql: str, *args):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def inbox_outcomes(dsn: str, tag: str) -> dict[str, int]:
    import asyncpg

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            prefix = f"evt_bench_{tag}_"  # not LIKE: "_" is a wildcard there
            rows = await conn.fetch("SELECT status, count(*) AS n FROM webhook_inbox"
                                    " WHERE left(event_id, length($1)) = $1 GROUP BY status", prefix)
            return {r["status"]: r["n"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(run())


def wait_for_drain(dsn: str, timeout: float, interval: float = 0.1) -> tuple[int, float | None]:
    """Poll the unprocessed inbox rows until there are none.

    Returns:
      (unprocessed rows at the first poll, seconds until none were left; None if ``timeout`` passed).
    """
    import asyncpg

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            start = time.monotonic()
            first = None
            while True:
                n = await conn.fetchval("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL")
                if first is None:
                    first = n
                elapsed = time.monotonic() - start
                if n == 0:
                    return first, elapsed
                if elapsed > timeout:
                    return first, None
                await asyncio.sleep(interval)
        finally:
            await conn.close()

    return asyncio.run(run())


# --------------------------------------------------------------------------- report


def render_table(rows: list[dict]) -> str:
    out = ["| conns | bare req/s | bare p50 ms | bare p99 ms | webhooks/s | wh p50 ms | wh p99 ms | non-200 "
           "| ratio wh/bare | rows stored | backlog at end | drain s | server CPU µs/req bare / wh "
           "| PG CPU µs/wh |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, w = r["bare"], r["wh"]
        pg = f"{w['pg_cpu_us']:.0f}" if w.get("pg_cpu_us") is not None else "n/a"
        drain = f"{r['drain_s']:.1f}" if r["drain_s"] is not None else f"> {r['drain_timeout']:g}"
        out.append(
            f"| {r['connections']} | {b['rps']:,.0f} | {fmt_ms(b['p50_ms'])} | {fmt_ms(b['p99_ms'])} "
            f"| {w['rps']:,.0f} | {fmt_ms(w['p50_ms'])} | {fmt_ms(w['p99_ms'])} | {w['bad'] + w['socket_errors']} "
            f"| **{r['ratio']:.2f}** | {r['stored']:,} | {r['backlog']:,} | {drain} "
            f"| {b['server_cpu_us']:.0f} / {w['server_cpu_us']:.0f} | {pg} |")
    return "\n".join(out)


def outcome_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(r["outcomes"].items())) or "none"
        drained = (f"{r['backlog'] / r['drain_s']:,.0f} rows/s" if r["drain_s"] and r["backlog"] else "n/a")
        drain_cpu = (f" (server CPU {r['drain_cpu_us']:,.0f} µs per processed row while draining)"
                     if r.get("drain_cpu_us") is not None else "")
        lines.append(
            f"- c={r['connections']}: {r['wh']['ok']:,} acknowledged, {r['stored']:,} new inbox rows "
            f"({r['wh']['matched']:,} answered as duplicates; request pool {r['pool']:,}); processed during the "
            f"run {r['stored'] - r['backlog']:,} ({(r['stored'] - r['backlog']) / r['wh']['duration_s']:,.0f}/s), "
            f"backlog {r['backlog']:,} drained at {drained}{drain_cpu}; inbox outcomes: {outcomes}; "
            f"payments: {r['payments']} pending@upi")
    return lines


def render_diagnosis(rows: list[dict]) -> str:
    out = ["Ingestion path without the processor (`--diagnose`; same connection count, same run):", "",
           "| conns | requests | req/s | p50 ms | p99 ms | unexpected | ratio to bare | server CPU µs/req "
           "| PG CPU µs/req |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    labels = [("bare", "bare `GET /healthz`"), ("rejected", "bad signature → 400 (no database)"),
              ("dup", "duplicates → 200 (INSERT … ON CONFLICT, no new row)"),
              ("wh", "new webhooks → 200 (+ the processor's work)")]
    for r in rows:
        for key, label in labels:
            x = r[key]
            pg = f"{x['pg_cpu_us']:.0f}" if x.get("pg_cpu_us") is not None else "n/a"
            out.append(f"| {r['connections']} | {label} | {x['rps']:,.0f} | {fmt_ms(x['p50_ms'])} "
                       f"| {fmt_ms(x['p99_ms'])} | {x['bad'] + x['socket_errors']} "
                       f"| {x['rps'] / r['bare']['rps'] if r['bare']['rps'] else 0:.2f} "
                       f"| {x['server_cpu_us']:.0f} | {pg} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--payments", type=int, default=300,
                        help="pending@upi payments the webhooks of one load run refer to (300)")
    parser.add_argument("--pool", type=int, default=60000,
                        help="distinct signed webhooks generated per measured run, at least (60000; raised to "
                             "1.5 × bare req/s × duration when that is more)")
    parser.add_argument("--drain-timeout", type=float, default=600,
                        help="longest wait for the inbox processor to drain, in seconds (600)")
    parser.add_argument("--diagnose", action="store_true",
                        help="after each measured run, also measure the ingestion path without the processor's "
                             "work: the same webhooks again (duplicates: verified, parsed, one INSERT … ON "
                             "CONFLICT, no new row) and badly signed ones (400: HTTP + body + HMAC, no database)")
    add_save_arguments(parser, py_spy_help="record a py-spy profile of the server during each webhook run into DIR "
                                           "(adds overhead: those numbers are not comparable)")
    args = parser.parse_args(argv)
    if args.payments < 1:
        parser.error("--payments must be at least 1")

    generator = resolve_generator(parser)
    server_env = parse_server_env(parser, args.server_env)
    secret = mockstripe_secret(server_env)
    run_tag = uuid.uuid4().hex[:8]
    rows: list[dict] = []
    try:
        with session(args.dsn, server_env, generator, args.duration, args.warmup) as s:
            api_key = s.create_merchant("bench webhooks merchant")
            print(f"server pid {s.server.proc.pid} at {s.url}; generator: {generator}", flush=True)
            bare = Scenario("healthz", "GET", "/healthz", 200)
            for connections in args.connections:
                b = s.measure(bare, connections)
                # At most as fast as the bare route: 1.5 × that is enough not to wrap around.
                need = lambda seconds: math.ceil(b["rps"] * seconds * 1.5) + 1000  # noqa: E731

                if args.warmup > 0:
                    tag = f"{run_tag}c{connections}w"
                    payments = create_pending_payments(s.url, api_key, args.payments)
                    s.load(webhook_scenario(webhook_requests(payments, need(args.warmup), tag, secret)),
                           connections, args.warmup)
                    wait_for_drain(s.dsn, args.drain_timeout)  # the measured run starts with an empty inbox

                tag = f"{run_tag}c{connections}"
                t = time.monotonic()
                payments = create_pending_payments(s.url, api_key, args.payments)
                print(f"  created {len(payments)} pending@upi payments in {time.monotonic() - t:.1f} s", flush=True)
                pool = max(args.pool, need(args.duration))
                t = time.monotonic()
                scenario = webhook_scenario(webhook_requests(payments, pool, tag, secret))
                print(f"  signed {pool:,} webhooks in {time.monotonic() - t:.1f} s", flush=True)
                rows_before = db_value(s.dsn, "SELECT count(*) FROM webhook_inbox")
                profile = None
                if args.py_spy:
                    pathlib.Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                    profile = str(pathlib.Path(args.py_spy) / f"webhooks-c{connections}.txt")
                w = s.measure(scenario, connections, profile, warmup=False)
                del scenario
                s.server_cpu.start()
                backlog, drain_s = wait_for_drain(s.dsn, args.drain_timeout)
                drain_cpu_us = s.server_cpu.stop() / backlog * 1e6 if backlog else None
                stored = db_value(s.dsn, "SELECT count(*) FROM webhook_inbox") - rows_before
                outcomes = inbox_outcomes(s.dsn, tag)
                drain_text = f"{drain_s:.1f} s" if drain_s is not None else f"more than {args.drain_timeout:g} s"
                print(f"  inbox: {stored:,} new rows, {backlog:,} unprocessed at the end of the run, drained in "
                      f"{drain_text}; duplicates answered {w['matched']:,}; outcomes {outcomes}", flush=True)
                row = {"connections": connections, "bare": b, "wh": w,
                       "ratio": w["rps"] / b["rps"] if b["rps"] else 0.0, "stored": stored,
                       "backlog": backlog, "drain_s": drain_s, "drain_timeout": args.drain_timeout,
                       "outcomes": outcomes, "pool": pool, "payments": len(payments),
                       "drain_cpu_us": drain_cpu_us}
                if args.diagnose:
                    # The same event ids, signed afresh: every one is a duplicate (200, nothing new to process).
                    sent = max(1, min(pool, w["ok"]))
                    row["dup"] = s.measure(Scenario(
                        "dups", "POST", f"/webhooks/{CONNECTOR}", 200, {"Content-Type": "application/json"},
                        per_request=webhook_requests(payments, sent, tag, secret), count_body=DUPLICATE_MARK),
                        connections, warmup=False)
                    row["rejected"] = s.measure(Scenario(
                        "rejected", "POST", f"/webhooks/{CONNECTOR}", 400, {"Content-Type": "application/json"},
                        per_request=webhook_requests(payments, 20000, f"{tag}x", secret + "_wrong")),
                        connections, warmup=False)
                rows.append(row)

            table = render_table(rows)
            details = outcome_lines(rows)
            if args.diagnose:
                details += ["", render_diagnosis(rows)]
            print()
            print(table)
            print()
            print("\n".join(details))
            worst = min(r["ratio"] for r in rows)
            print(f"generator: {generator}; goal ratio ≥ {GOAL_RATIO} (lowest measured: {worst:.2f}); "
                  f"non-200 webhooks: {sum(r['wh']['bad'] + r['wh']['socket_errors'] for r in rows)}")
            if args.py_spy:
                print(f"py-spy raw profiles in {args.py_spy} (these numbers include profiler overhead)")
            if not args.no_save:
                save_results(table, details, generator, args, rows)
                print(f"appended to {RESULTS}")
        return 0
    except KeyboardInterrupt:
        return 130


def save_results(table: str, details: list[str], generator: str, args, rows: list[dict]) -> None:
    gen_cpu = ", ".join(f"c={r['connections']}: {r['wh']['loadgen_cpu_s'] / max(1, r['wh']['requests']) * 1e6:.0f}"
                        for r in rows)
    extra = [f"- webhooks: signed `POST /webhooks/{CONNECTOR}`, distinct event ids, cycling over "
             f"{args.payments} pending@upi payments per load run; ratio = webhooks/s ÷ bare req/s, "
             f"goal ≥ {GOAL_RATIO}"]
    append_results("bench_webhooks.py", generator, f"its CPU per webhook (µs): {gen_cpu}", args, extra, table,
                   after_table=details)


if __name__ == "__main__":
    sys.exit(main())
