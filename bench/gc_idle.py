#!/usr/bin/env python3
"""Full collections with many idle WebSocket connections (issue 22): how many
objects the cycle collector tracks per idle connection, and how long a
generation-2 collection stops the server. Not a test: it measures and reports.

    .venv/bin/python bench/gc_idle.py                       # 10,000 idle connections, 5 full collections
    .venv/bin/python bench/gc_idle.py --hold 2000 --collections 3 --no-save    # smoke
    .venv/bin/python bench/gc_idle.py --server-env PAYCAST_GC_TUNING=false     # CPython's defaults

One server (``run.py serve``) on an embedded PostgreSQL (or ``--dsn``). The
collector's state comes from the server itself (``GET /debug/gc``, admin):
objects tracked per generation and frozen. ``?collect=2`` runs a full
collection in the server and times it there (the pause is also observed in
``paycast_gc_pause_seconds{generation="2"}``, whose count and sum are read
too). Pauses are wall time inside one process: on a busy machine a pause can
only look longer than it is (descheduling), never shorter; the tracked-object
counts do not depend on the load at all.

  1. baseline: the collector's state with no connection open (after a warm-up
     batch of connections was opened and closed);
  2. hold: ``--hold`` connections (distinct clients) opened ``--handshakes`` at
     a time by bench/ws_load.py processes, held idle ``--hold-s``; then the
     state (objects tracked per connection, beyond the baseline) and
     ``--collections`` timed full collections, one per ``--gap-s``;
  3. after closing them all: one more full collection, and the state; the
     tracked and frozen counts should return to the baseline (frozen objects
     that stay are a leak of the freezing policy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402

from bench.bench_realtime import Gens, raise_nofile, rss_kb, settle_connections  # noqa: E402
from bench.common import load_average, machine_facts, parse_server_env, realtime_token_key, session  # noqa: E402


def gc_metric(text: str) -> tuple[float, float]:
    """(count, sum) of ``paycast_gc_pause_seconds{generation="2"}`` in a /metrics text."""
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith('paycast_gc_pause_seconds_count{generation="2"}'):
            count = float(line.split()[-1])
        elif line.startswith('paycast_gc_pause_seconds_sum{generation="2"}'):
            total = float(line.split()[-1])
    return count, total


async def run(args, sess, api_key: str, key: bytes, merchant_id: str) -> dict:
    from domain.realtime import Claims, sign_token
    from tests.support import ADMIN_TOKEN

    server_url, pid = sess.url, sess.server.proc.pid
    ws_base = server_url.replace("http://", "ws://") + "/v1/realtime?token="
    expiry = int(time.time()) + 6 * 3600

    def url(client_id: str) -> str:
        return ws_base + sign_token(key, Claims(merchant_id, client_id, None, expiry, int(time.time() * 1000)))

    admin = httpx.AsyncClient(base_url=server_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120)

    async def state(collect: int | None = None, freeze: int | None = None) -> dict:
        params = {"collect": str(collect)} if collect is not None else {}
        if freeze is not None:
            params["freeze"] = str(freeze)
        if args.garbage and collect is not None:
            params["garbage"] = "1"
        r = await admin.get("/debug/gc", params=params)
        r.raise_for_status()
        return r.json()

    async def settle(expected: float, timeout: float = 60) -> float:
        return await settle_connections(admin, expected, timeout)

    out: dict = {}
    warm = Gens(1)
    await warm.connect([url(f"cus_warm_{i}") for i in range(min(500, args.hold))], args.handshakes)
    await warm.close()
    await settle(0)
    await trio.sleep(1)
    await state(2)
    out["base"] = base = await state()
    out["rss_base_mib"] = rss_kb(pid) / 1024
    print(f"[baseline] tracked {base['tracked']:,} frozen {base['frozen']:,}", flush=True)

    hold = Gens(args.gen_procs)
    opened = await hold.connect([url(f"cus_hold_{i}") for i in range(args.hold)], args.handshakes)
    held = await settle(opened["open"])
    out["opened"], out["failed"], out["connect_s"], out["held"] = (opened["open"], opened["failed"],
                                                                   opened["seconds"], held)
    await trio.sleep(args.hold_s)
    out["held_state"] = s = await state()
    out["rss_mib"] = rss_kb(pid) / 1024
    n = max(1.0, held)
    print(f"[hold] {held:.0f} open; tracked {s['tracked']:,} ({(s['tracked'] - base['tracked']) / n:.1f}/conn), "
          f"frozen {s['frozen']:,} ({(s['frozen'] - base['frozen']) / n:.1f}/conn), by generation "
          f"{s['by_generation']}", flush=True)
    before = gc_metric((await admin.get("/metrics")).text)
    pauses, cpus = [], []
    for i in range(args.collections):
        r = await state(2)
        pauses.append(r["pause_s"])
        cpus.append(r["pause_cpu_s"])
        print(f"[hold] full collection {i + 1}: {r['pause_s'] * 1000:.1f} ms ({r['pause_cpu_s'] * 1000:.1f} ms CPU), "
              f"collected {r['collected']}, tracked after {r['tracked']:,}", flush=True)
        await trio.sleep(args.gap_s)
    after = gc_metric((await admin.get("/metrics")).text)
    out["pauses"], out["pause_cpus"] = pauses, cpus
    out["metric"] = ((after[1] - before[1]) / (after[0] - before[0])) if after[0] > before[0] else float("nan")
    young = [(await state(0))["pause_cpu_s"] for _ in range(3)]
    out["young_ms"] = statistics.median(young) * 1000

    if args.load_s:  # HTTP load with the connections held: CPU per request, and what it leaves for the collector
        from bench.bench_compare import payment_body
        from bench.common import Scenario

        auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        out["load"] = {}
        requests = 0
        for sc in (Scenario("bare", "GET", "/healthz", 200),
                   Scenario("confirm_true", "POST", "/v1/payments", 201, auth, payment_body(confirm=True))):
            res = await trio.to_thread.run_sync(lambda: sess.measure(sc, 32, warmup=False))
            requests += res["requests"]
            out["load"][sc.name] = {"rps": res["rps"], "cpu_us": res["server_cpu_us"], "bad": res["bad"]}
        out["load_requests"] = requests
        after_load = []
        for i in range(args.collections):
            after_load.append((await state(2))["pause_cpu_s"])
            await trio.sleep(args.gap_s)
        out["pauses_after_load"] = after_load
        print(f"[load] full collections after it: {[round(p * 1000, 1) for p in after_load]} ms CPU", flush=True)

    if args.probe_freeze:  # what freezing the held connections would give, and what it would leak
        f = await state(1, freeze=1)
        frozen_pauses = [(await state(2))["pause_cpu_s"] for _ in range(args.collections)]
        out["probe"] = {"frozen": f["frozen"], "pauses": frozen_pauses}
        print(f"[probe] frozen {f['frozen']:,}; full collections then {[round(p * 1000, 1) for p in frozen_pauses]} "
              "ms CPU",
              flush=True)

    await hold.close()
    await settle(0)
    await trio.sleep(1)
    out["closed_collect"] = await state(2)
    out["closed"] = c = await state()
    print(f"[closed] tracked {c['tracked']:,} frozen {c['frozen']:,}", flush=True)
    if True:  # always: what the freezing (the server's or the probe's) left frozen as cyclic garbage
        t = await state(2, freeze=0)  # thawed: cyclic garbage among the frozen objects is collected now
        out["thaw"] = {"collected": t["collected"], "pause_s": t["pause_cpu_s"], "tracked": t["tracked"]}
        print(f"[thaw] collected {t['collected']:,} in {t['pause_s'] * 1000:.1f} ms; tracked {t['tracked']:,}",
              flush=True)
        if "garbage" in t:
            print("[thaw] the cyclic garbage by type:", json.dumps(t["garbage"], indent=1), flush=True)
    await admin.aclose()
    return out


def render(r: dict, args) -> str:
    base, s, c = r["base"], r["held_state"], r["closed"]
    n = max(1.0, r["held"])
    p = r["pauses"]
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| connections held (opened / failed) | {r['held']:,.0f} ({r['opened']:,} / {r['failed']}) |",
        f"| objects tracked, no connection (baseline) | {base['tracked']:,} (frozen {base['frozen']:,}) |",
        f"| objects tracked with the connections held | {s['tracked']:,} (frozen {s['frozen']:,}) |",
        f"| … tracked per connection, beyond the baseline | {(s['tracked'] - base['tracked']) / n:.1f} |",
        f"| … frozen per connection, beyond the baseline | {(s['frozen'] - base['frozen']) / n:.1f} |",
        f"| full collection pause, CPU time, median / max of {len(p)} (ms) | "
        f"**{statistics.median(r['pause_cpus']) * 1000:.1f}** / {max(r['pause_cpus']) * 1000:.1f} |",
        f"| … wall time, median / max (ms; inflated when the box is busy) | "
        f"{statistics.median(p) * 1000:.1f} / {max(p) * 1000:.1f} |",
        f"| … mean by `paycast_gc_pause_seconds{{generation=\"2\"}}` (ms) | {r['metric'] * 1000:.1f} |",
        f"| young collection pause, CPU time, median of 3 (ms) | {r['young_ms']:.2f} |",
        f"| RSS baseline → held (MiB) | {r['rss_base_mib']:.0f} → {r['rss_mib']:.0f} |",
        f"| after closing all: tracked / frozen | {c['tracked']:,} / {c['frozen']:,} |",
    ]
    if "probe" in r:
        fp = r["probe"]["pauses"]
        rows.append(f"| probe: held objects frozen ({r['probe']['frozen']:,}); full collection CPU median / max (ms) | "
                    f"{statistics.median(fp) * 1000:.1f} / {max(fp) * 1000:.1f} |")
    if "load" in r:
        for name, x in r["load"].items():
            rows.append(f"| load with the connections held, {args.load_s:g} s of `{name}` (32 conns): req/s, "
                        f"server CPU µs/req, bad | {x['rps']:,.0f}, {x['cpu_us']:.0f}, {x['bad']} |")
        fl = r["pauses_after_load"]
        rows.append(f"| full collection after the load, CPU time, median / max (ms) | "
                    f"{statistics.median(fl) * 1000:.1f} / {max(fl) * 1000:.1f} |")
    if "thaw" in r:
        t = r["thaw"]
        label = "; per 1,000 requests of the load" if r.get("load_requests") else ""
        per_req = f"; {t['collected'] / r['load_requests'] * 1000:.1f}" if r.get("load_requests") else ""
        rows.append(f"| after closing, thawed: cyclic garbage that was frozen, per connection{label} | "
                    f"{t['collected']:,} ({t['collected'] / n:.1f}{per_req}) in {t['pause_s'] * 1000:.1f} ms CPU |")
    return "\n".join(rows)


def save(table: str, args) -> None:
    facts = machine_facts()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = [f"## {when} — full collections with idle WebSockets (bench/gc_idle.py)", "",
            f"- command: `.venv/bin/python bench/gc_idle.py {shlex.join(sys.argv[1:])}`".replace(" `", " `", 1),
            f"- machine: nproc={facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}, Python {facts['python']}",
            f"- load average (1/5/15 min) at the end: {load_average()} "
            f"({'busy machine' if args.busy else 'other sessions share this box'})"]
    if args.server_env:
        text.append(f"- server settings: {' '.join(args.server_env)}")
    if args.note:
        text.append(f"- note: {args.note}")
    with RESULTS.open("a") as f:
        f.write("\n".join(text + ["", table, ""]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", type=int, default=10_000, help="idle connections to hold (10000)")
    parser.add_argument("--hold-s", type=float, default=5, help="seconds to hold them before measuring (5)")
    parser.add_argument("--handshakes", type=int, default=200, help="concurrent WebSocket handshakes (200)")
    parser.add_argument("--gen-procs", type=int, default=1, help="load-generator processes (1)")
    parser.add_argument("--collections", type=int, default=5, help="full collections timed (5)")
    parser.add_argument("--gap-s", type=float, default=1, help="seconds between them (1)")
    parser.add_argument("--probe-freeze", action="store_true",
                        help="also freeze the held connections' objects (GET /debug/gc?freeze=1), time full "
                             "collections then, and after closing count the cyclic garbage left frozen")
    parser.add_argument("--load-s", type=float, default=0,
                        help="also run wrk (32 conns) for this long on /healthz, then on POST /v1/payments "
                             "with confirm, while the connections are held (0: no load)")
    parser.add_argument("--garbage", action="store_true", help="print what the collections found, by type")
    parser.add_argument("--dsn", default=os.environ.get("PAYCAST_DATABASE_URL"))
    parser.add_argument("--server-env", action="append", default=[], metavar="PAYCAST_X=VALUE")
    parser.add_argument("--busy", action="store_true", help='label the saved entry "busy machine"')
    parser.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    env = {"PAYCAST_LOG_LEVEL": "WARNING", "PAYCAST_PROCESSING_DEADLINE_S": "3600",
           **parse_server_env(parser, args.server_env)}
    limits = raise_nofile()
    if limits[0] < args.hold + 200:
        print(f"warning: open-files limit {limits[0]} is below the {args.hold + 200} this run needs", file=sys.stderr)
    from tests.support import ADMIN_TOKEN

    with session(args.dsn, env, "wrk", args.load_s, 0) as s:
        with s.server.client(ADMIN_TOKEN) as admin:
            created = admin.post("/admin/merchants", json={"name": "gc bench"}).json()
        merchant_id, api_key = created["merchant"]["id"], created["api_key"]
        with s.server.client(api_key) as c:  # creates the deployment's realtime key if needed
            assert c.post("/v1/realtime/tokens", json={"client_id": "cus_bench"}).status_code == 201
        key = realtime_token_key(s.dsn)
        results = trio.run(run, args, s, api_key, key, merchant_id)
    table = render(results, args)
    print("\n" + table)
    if not args.no_save:
        save(table, args)
        print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
