#!/usr/bin/env python3
"""Paycast payment throughput, as a ratio to the bare JSON route in the same run.

    .venv/bin/python bench/bench_payments.py [--connections 32 64] [--duration 10]

For each connection count it measures, against one real ``run.py serve``
process on a free port:

  (a) ``GET /healthz``: the HTTP stack alone (hypercorn + quart-trio, no database);
  (b) ``POST /v1/payments`` with ``"confirm": true`` (create + authorise + settle):
      payments/s, p50, p99 and the number of responses that were not 201.

and prints a markdown table with payments/s ÷ bare req/s (DESIGN.md: benchmarks
report throughput as a ratio to the bare route in the same run). It never
asserts on timings: a benchmark is a measurement, not a test.

Database: ``--dsn`` or ``PAYCAST_DATABASE_URL`` if given (the server migrates
it); otherwise an embedded PostgreSQL in a fresh temp dir under /tmp, removed
at the end. Server, PostgreSQL and temp dir are cleaned up on Ctrl-C too.

Load generator (the machine has 2 cores and the server needs them, so it must
be cheap): ``wrk`` with a generated Lua script when ``wrk`` is on PATH,
otherwise a single-threaded epoll HTTP/1.1 keep-alive client written with raw
sockets, run in a child process (``bench/common.py --_loadgen``). Both are
closed-loop: every connection sends its next request as soon as the previous
response arrived. The CPU the generator, the server and PostgreSQL spent
during each measured run is reported as well.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS, Scenario, add_common_arguments, append_results, fmt_ms, machine_facts, parse_server_env,
    resolve_generator, session,
)

PAYMENT_BODY = json.dumps(
    {"amount": 1000, "currency": "INR", "payment_method": {"type": "card", "card": {"number": "4242424242424242"}},
     "confirm": True},
    separators=(",", ":"),
)
GOAL_RATIO = 0.6


def render_table(rows: list[dict]) -> str:
    out = ["| conns | bare req/s | bare p50 ms | bare p99 ms | payments/s | pay p50 ms | pay p99 ms | non-201 "
           "| ratio pay/bare | server CPU µs/req bare / pay | PG CPU µs/pay |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, p = r["bare"], r["pay"]
        pg = f"{p['pg_cpu_us']:.0f}" if p.get("pg_cpu_us") is not None else "n/a"
        out.append(
            f"| {r['connections']} | {b['rps']:,.0f} | {fmt_ms(b['p50_ms'])} | {fmt_ms(b['p99_ms'])} "
            f"| {p['rps']:,.0f} | {fmt_ms(p['p50_ms'])} | {fmt_ms(p['p99_ms'])} | {p['bad'] + p['socket_errors']} "
            f"| **{r['ratio']:.2f}** | {b['server_cpu_us']:.0f} / {p['server_cpu_us']:.0f} | {pg} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--merchants", type=int, default=1,
                        help="spread the payments over this many merchants, round robin (1; >1 is a diagnostic "
                             "for per-merchant contention)")
    parser.add_argument("--server-env", action="append", default=[], metavar="PAYCAST_X=VALUE",
                        help="extra setting for the server process (repeatable)")
    parser.add_argument("--py-spy", metavar="DIR",
                        help="record a py-spy profile of the server during each payment run into DIR "
                             "(adds overhead: those numbers are not comparable)")
    parser.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--note", default="", help="one line saved with the results")
    args = parser.parse_args(argv)

    generator = resolve_generator(parser, args.generator)
    server_env = parse_server_env(parser, args.server_env)
    rows: list[dict] = []
    try:
        with session(args.dsn, server_env, generator, args.duration, args.warmup) as s:
            api_keys = [s.create_merchant(f"bench merchant {i}") for i in range(max(1, args.merchants))]
            print(f"server pid {s.server.proc.pid} at {s.url}; generator: {generator}", flush=True)
            bare = Scenario("healthz", "GET", "/healthz", 200)
            pay = Scenario("payments", "POST", "/v1/payments", 201,
                           {"Authorization": f"Bearer {api_keys[0]}", "Content-Type": "application/json"},
                           PAYMENT_BODY,
                           rotate=("Authorization", [f"Bearer {k}" for k in api_keys]) if len(api_keys) > 1 else None)
            for connections in args.connections:
                b = s.measure(bare, connections)
                profile = None
                if args.py_spy:
                    pathlib.Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                    profile = str(pathlib.Path(args.py_spy) / f"payments-c{connections}.txt")
                p = s.measure(pay, connections, profile)
                rows.append({"connections": connections, "bare": b, "pay": p,
                             "ratio": p["rps"] / b["rps"] if b["rps"] else 0.0})

            table = render_table(rows)
            print()
            print(table)
            print()
            worst = min(r["ratio"] for r in rows)
            print(f"generator: {generator}; goal ratio ≥ {GOAL_RATIO} (lowest measured: {worst:.2f}); "
                  f"non-201 payments: {sum(r['pay']['bad'] + r['pay']['socket_errors'] for r in rows)}")
            if args.py_spy:
                print(f"py-spy raw profiles in {args.py_spy} (these numbers include profiler overhead)")
            if not args.no_save:
                save_results(table, machine_facts(), generator, args, rows)
                print(f"appended to {RESULTS}")
        return 0
    except KeyboardInterrupt:
        return 130


def save_results(table: str, facts: dict, generator: str, args, rows: list[dict]) -> None:
    gen_cpu = ", ".join(f"c={r['connections']}: {r['pay']['loadgen_cpu_s'] / max(1, r['pay']['requests']) * 1e6:.0f}"
                        for r in rows)
    extra = []
    if args.merchants > 1:
        extra.append(f"- payments spread over {args.merchants} merchants (diagnostic, not the headline number)")
    append_results("bench_payments.py", generator, f"its CPU per payment (µs): {gen_cpu}", args, extra, table)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_loadgen":  # older spelling of bench/common.py's child
        from bench.common import loadgen_child

        sys.exit(loadgen_child(sys.argv[2]))
    sys.exit(main())
