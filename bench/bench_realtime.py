#!/usr/bin/env python3
"""Paycast realtime gateway benchmark against a minimal ``websockets``
broadcast server, in one run. Not a test: it measures and reports.

    .venv/bin/python bench/bench_realtime.py [--hold 10000] [--fanout-conns 1000 --fanout-messages 400]
                                             [--latency-conns 5000 --webhooks 3000 --webhook-rate 300]

The WebSocket clients live in separate load-generator processes
(bench/ws_load.py, the ``websockets`` asyncio client, no compression), so the
orchestrator (this script: publishing, webhooks) and the generators are
measured apart from the servers; every figure is per delivered frame, from
the servers' own CPU counters (/proc), which is less sensitive to other load
on the machine than throughput is.

  1. hold: ``--hold`` idle connections (distinct clients) opened on Paycast
     and on the reference; RSS growth per connection of each (after a warm-up
     batch was opened and closed, so allocator warm-up is not counted).
  2. fan-out: ``--fanout-conns`` connections over ``--fanout-clients`` clients;
     per round ``--fanout-messages`` messages published through
     ``POST /v1/realtime/publish`` (so Paycast's figure includes publishing),
     then the same number of frames per connection broadcast by the reference
     (bench/reference/ws_broadcast.py) to as many connections; ``--rounds``
     rounds, interleaved. Reported: server CPU µs per delivered frame (and the
     ratio), frames/s, generator CPU per frame and its busy share.
  3. latency: ``--latency-conns`` connections, one client each, each with a
     payment left ``processing`` (``pending@upi``); signed ``mockstripe``
     webhooks sent open-loop at ``--webhook-rate``/s; latency from sending the
     webhook to the generator receiving the client's ``payment.succeeded``
     (wall clock, same machine).

Tokens are minted with the deployment's realtime key read from the database,
so thousands of tokens cost no requests. Database: ``--dsn`` or
``PAYCAST_DATABASE_URL``; otherwise an embedded PostgreSQL in a fresh temp dir
under /tmp, removed at the end. The open-files limit is raised to its hard
maximum for this process, the servers and the generators.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402

from bench.common import (  # noqa: E402
    RESULTS, add_save_arguments, command_line, database_line, embedded_postgres, machine_line, parse_server_env,
    postmaster_pid, realtime_token_key, utc_now, write_results,
)

LOAD_AT_START = os.getloadavg()[0]


# --------------------------------------------------------------------------- helpers


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (inherited by the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)



async def open_connections(client: httpx.AsyncClient) -> float:
    """The server's ``paycast_realtime_connections`` (from ``/metrics``), NaN when absent."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("paycast_realtime_connections "):
            return float(line.split()[1])
    return float("nan")


async def settle_connections(client: httpx.AsyncClient, expected: float, timeout: float) -> float:
    """Poll :func:`open_connections` until it is ``expected`` (at most ``timeout`` s); the last count."""
    with trio.move_on_after(timeout):
        while await open_connections(client) != expected:
            await trio.sleep(0.2)
    return await open_connections(client)

def rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu_s(pids: list[int]) -> float:
    """CPU of the PostgreSQL processes (postmaster and its backends, read now)."""
    total = 0.0
    for pid in pids:
        try:
            total += sum(cpu_s(child) for child in [pid, *_children(pid)])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        import psutil
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - an exited backend is simply not counted
        return []


def postgres_pids(pg) -> list[int]:
    """The postmaster of the embedded PostgreSQL (none for an external database)."""
    pid = postmaster_pid(pg) if pg is not None else None
    return [pid] if pid else []


class Reference:
    """bench/reference/ws_broadcast.py on a free port."""

    def __init__(self) -> None:
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Reference":
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "reference" / "ws_broadcast.py"),
                                      "--port", str(self.port)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if '"listening"' not in line:
            raise RuntimeError(f"reference server did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Gen:
    """One load-generator process (bench/ws_load.py) and its line protocol."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ws_load.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def _send(self, obj: dict) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        return json.loads(line)

    async def call(self, obj: dict) -> dict:
        self._send(obj)
        return await trio.to_thread.run_sync(self._read)

    async def arm(self, n: int, timeout: float) -> None:
        """Start counting ``n`` event frames; :meth:`result` waits for the count."""
        assert (await self.call({"cmd": "expect", "n": n, "timeout": timeout}))["armed"]

    async def result(self) -> dict:
        return await trio.to_thread.run_sync(self._read)

    def pid(self) -> int:
        return self.proc.pid

    async def close(self) -> None:
        if self.proc.poll() is None:
            with trio.move_on_after(60):
                await self.call({"cmd": "close"})
            self.proc.stdin.close()
            try:
                await trio.to_thread.run_sync(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await trio.to_thread.run_sync(self.proc.wait)


class Gens:
    """``n`` generator processes; connections are split round robin among them."""

    def __init__(self, n: int) -> None:
        self.gens = [Gen() for _ in range(n)]

    async def connect(self, urls: list[str], concurrency: int) -> dict:
        parts = [urls[i::len(self.gens)] for i in range(len(self.gens))]
        out: list[dict] = []
        per = max(1, concurrency // len(self.gens))

        async def one(gen: Gen, part: list[str]) -> None:
            out.append(await gen.call({"cmd": "connect", "urls": part, "concurrency": per}))

        async with trio.open_nursery() as n:
            for gen, part in zip(self.gens, parts):
                n.start_soon(one, gen, part)
        return {"open": sum(o["open"] for o in out), "failed": sum(o["failed"] for o in out),
                "seconds": max(o["seconds"] for o in out)}

    async def measure(self, expected_per_gen: list[int], timeout: float, trigger) -> dict:
        """Arm every generator, run ``trigger()``, collect: frames, span, generator CPU."""
        for gen, n in zip(self.gens, expected_per_gen):
            await gen.arm(n, timeout)
        await trigger()
        results: list[dict] = []

        async def one(gen: Gen) -> None:
            results.append(await gen.result())

        async with trio.open_nursery() as n:
            for gen in self.gens:
                n.start_soon(one, gen)
        firsts = [r["first"] for r in results if r["received"]]
        return {"received": sum(r["received"] for r in results),
                "span_s": (max(r["last"] for r in results) - min(firsts)) if firsts else float("nan"),
                "gen_cpu_s": sum(r["cpu_s"] for r in results)}

    async def watch(self, match: str) -> None:
        for gen in self.gens:
            await gen.call({"cmd": "watch", "match": match})

    async def times(self) -> dict[int, float]:
        """Receipt times by global connection index."""
        out: dict[int, float] = {}
        k = len(self.gens)
        for g, gen in enumerate(self.gens):
            for idx, t in (await gen.call({"cmd": "times"}))["times"].items():
                out[int(idx) * k + g] = t
        return out

    async def close(self) -> None:
        for gen in self.gens:
            await gen.close()


# --------------------------------------------------------------------------- the run


async def run(args, server, merchant_id: str, api_key: str, key: bytes, reference) -> dict:
    from domain.realtime import Claims, sign_token
    from domain.signatures import stripe_header

    ws_base = server.url.replace("http://", "ws://") + "/v1/realtime?token="
    expiry = int(time.time()) + 6 * 3600

    def url(client_id: str, device_id: str | None = None) -> str:
        return ws_base + sign_token(key, Claims(merchant_id, client_id, device_id, expiry, int(time.time() * 1000)))

    pid = server.proc.pid
    results: dict = {}
    api = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60,
                            limits=httpx.Limits(max_connections=32))
    ref_http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{reference.port}", timeout=60)

    async def server_open_connections() -> float:
        return await open_connections(api)

    async def settle(expected: float, timeout: float = 30) -> float:
        return await settle_connections(api, expected, timeout)

    async def ref_count() -> int:
        return int((await ref_http.get("/count")).text)

    # ---------------------------------------------------------------- 1. hold
    if args.hold:
        print(f"[hold] warm-up: {min(500, args.hold)} connections opened and closed", flush=True)
        warm = Gens(1)
        await warm.connect([url(f"cus_warm_{i}") for i in range(min(500, args.hold))], args.handshakes)
        await warm.close()
        await settle(0)
        await trio.sleep(1)
        baseline, ref_base = rss_kb(pid), rss_kb(reference.proc.pid)
        print(f"[hold] baseline RSS Paycast {baseline / 1024:.1f} MiB, reference {ref_base / 1024:.1f} MiB; "
              f"opening {args.hold} on each", flush=True)
        hold = Gens(args.gen_procs)
        opened = await hold.connect([url(f"cus_hold_{i}") for i in range(args.hold)], args.handshakes)
        ref_hold = Gens(args.gen_procs)
        ref_opened = await ref_hold.connect([reference.url] * args.hold, args.handshakes)
        held = await settle(opened["open"])
        await trio.sleep(args.hold_s)
        after, ref_after = rss_kb(pid), rss_kb(reference.proc.pid)
        still, ref_still = await server_open_connections(), await ref_count()
        results["hold"] = {"target": args.hold, "opened": opened["open"], "failed": opened["failed"],
                           "server_open": held, "server_open_after_hold": still, "hold_s": args.hold_s,
                           "connect_s": opened["seconds"], "rss_base_mib": baseline / 1024, "rss_mib": after / 1024,
                           "per_conn_kb": (after - baseline) / max(1, held),
                           "ref_open": ref_still, "ref_per_conn_kb": (ref_after - ref_base) / max(1, ref_still)}
        print(f"[hold] Paycast {still:.0f} open → {results['hold']['per_conn_kb']:.1f} KB/conn; reference "
              f"{ref_opened['open']} → {results['hold']['ref_per_conn_kb']:.1f} KB/conn", flush=True)
        await hold.close()
        await ref_hold.close()
        await settle(0, timeout=60)

    # ---------------------------------------------------------------- 2. fan-out, interleaved with the reference
    per_client = max(1, args.fanout_conns // args.fanout_clients)
    n_conns = args.fanout_clients * per_client
    print(f"[fan-out] {args.fanout_clients} clients × {per_client} connections; {args.fanout_messages} messages "
          f"per round; {args.rounds} rounds each, interleaved with the reference", flush=True)
    fan = Gens(args.gen_procs)
    opened = await fan.connect([url(f"cus_fan_{i % args.fanout_clients}", f"dev_{i}") for i in range(n_conns)],
                               args.handshakes)
    ref_fan = Gens(args.gen_procs)
    ref_opened = await ref_fan.connect([reference.url] * n_conns, args.handshakes)
    payload = {"text": "x" * args.message_bytes}
    rounds: dict[str, list[dict]] = {"paycast": [], "reference": []}

    def split(total_per_conn: int, gens: Gens, n_open: int) -> list[int]:
        k = len(gens.gens)
        return [total_per_conn * len(range(g, n_open, k)) for g in range(k)]

    for round_no in range(args.rounds):
        limiter = trio.Semaphore(args.publishers)

        async def put(i: int) -> None:
            async with limiter:
                for _attempt in range(5):  # a loaded shared machine may time out a pool wait (503): retry
                    r = await api.post("/v1/realtime/publish", json={
                        "client_id": f"cus_fan_{i % args.fanout_clients}", "event": {"type": "bench", "data": payload}})
                    if r.status_code != 503:
                        break
                    await trio.sleep(0.2)
                r.raise_for_status()

        async def publish_all() -> None:
            async with trio.open_nursery() as publishers:
                for i in range(args.fanout_messages):
                    publishers.start_soon(put, i)

        per_conn = args.fanout_messages // args.fanout_clients
        cpu0, pg0 = cpu_s(pid), pg_cpu_s(args.pg_pids)
        m = await fan.measure(split(per_conn, fan, opened["open"]), 120, publish_all)
        cpu, pg = cpu_s(pid) - cpu0, pg_cpu_s(args.pg_pids) - pg0
        rounds["paycast"].append(_fan_row(m, cpu, pg))

        async def trigger_ref() -> None:
            (await ref_http.get("/broadcast", params={"n": per_conn, "bytes": args.message_bytes})).raise_for_status()

        ref_pid = reference.proc.pid
        cpu0 = cpu_s(ref_pid)
        m = await ref_fan.measure(split(per_conn, ref_fan, ref_opened["open"]), 120, trigger_ref)
        rounds["reference"].append(_fan_row(m, cpu_s(ref_pid) - cpu0, 0.0))
        p, r = rounds["paycast"][-1], rounds["reference"][-1]
        print(f"[fan-out {round_no + 1}] Paycast {p['delivered']:,} frames, {p['per_s']:,.0f}/s, server "
              f"{p['server_us']:.1f} µs/frame (PG {p['pg_us']:.1f}), generator {p['gen_us']:.1f} µs/frame | "
              f"reference {r['delivered']:,}, {r['per_s']:,.0f}/s, {r['server_us']:.1f} µs/frame, "
              f"generator {r['gen_us']:.1f} µs/frame", flush=True)
    results["fanout"] = {"connections": opened["open"], "clients": args.fanout_clients,
                         "messages": args.fanout_messages, "rounds": rounds,
                         "ref_connections": ref_opened["open"]}
    await fan.close()
    await ref_fan.close()
    await settle(0, timeout=60)

    # ---------------------------------------------------------------- 3. latency
    results["latency"] = []
    for round_no, rate in enumerate(args.webhook_rate if args.latency_conns else []):
        results["latency"].append(await _latency_round(args, server, api, url, stripe_header, round_no, rate))
    await api.aclose()
    await ref_http.aclose()
    return results


def _fan_row(m: dict, server_cpu: float, pg_cpu: float) -> dict:
    n = max(1, m["received"])
    return {"delivered": m["received"], "span_s": m["span_s"], "per_s": m["received"] / m["span_s"],
            "server_us": server_cpu / n * 1e6, "pg_us": pg_cpu / n * 1e6, "gen_us": m["gen_cpu_s"] / n * 1e6,
            "gen_cpu_share": m["gen_cpu_s"] / m["span_s"]}


def _webhook_request(base_url: str, pay: dict, i: int, stripe_header) -> bytes:
    """The raw, signed ``payment_intent.succeeded`` request for one pending payment."""
    body = json.dumps({"id": f"evt_bench_{i}_{pay['id']}", "type": "payment_intent.succeeded",
                       "created": int(time.time()),
                       "data": {"object": {"id": pay["attempts"][0]["connector_txn_id"],
                                           "amount": pay["amount"], "currency": "inr", "status": "succeeded",
                                           "metadata": {"payment_id": pay["id"]}}}}).encode()
    host = base_url.rsplit("//", 1)[1]
    head = (f"POST /webhooks/mockstripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {stripe_header('whsec_dev_mockstripe', body, int(time.time()))}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("latin-1") + body


async def _latency_round(args, server, api, url, stripe_header, round_no: int, rate: float) -> dict:
    """One latency measurement: fresh payments and connections, webhooks at ``rate``/s."""
    n = args.latency_conns
    print(f"[latency] {n} payments left processing; {n} connections; {rate:g} webhooks/s", flush=True)
    pays: list[dict] = [None] * n  # type: ignore[list-item]
    limiter = trio.Semaphore(16)
    pid = server.proc.pid

    async def make(i: int) -> None:
        async with limiter:
            r = await api.post("/v1/payments", json={
                "amount": 1000 + i, "currency": "INR", "customer_id": f"cus_lat{round_no}_{i}",
                "connector": "mockstripe", "payment_method": {"type": "upi", "upi": {"vpa": "pending@upi"}},
                "confirm": True})
            r.raise_for_status()
            pays[i] = r.json()

    async with trio.open_nursery() as makers:
        for i in range(n):
            makers.start_soon(make, i)
    webhooks = min(n, args.webhooks)
    lat = Gens(args.gen_procs)
    opened = await lat.connect([url(f"cus_lat{round_no}_{i}") for i in range(n)], args.handshakes)
    await lat.watch('"payment.succeeded"')
    requests_file = pathlib.Path(tempfile.mkstemp(prefix="paycast-webhooks-", suffix=".jsonl")[1])
    with requests_file.open("w") as f:
        for i in range(webhooks):
            f.write(json.dumps(_webhook_request(server.url, pays[i], i, stripe_header).decode("latin-1")) + "\n")
    host, port = server.url.rsplit("//", 1)[1].split(":")

    await trio.sleep(1)  # let the connection burst settle
    idle0, pg_idle0 = cpu_s(pid), pg_cpu_s(args.pg_pids)
    await trio.sleep(args.idle_s)  # what the server spends with nothing to do (pings, timers, reconcilers)
    idle_share = (cpu_s(pid) - idle0) / args.idle_s
    pg_idle_share = (pg_cpu_s(args.pg_pids) - pg_idle0) / args.idle_s
    gc.collect()
    gc.disable()
    cpu0 = cpu_s(pid)
    print(f"[latency] idle server CPU {idle_share:.0%} of a core, PostgreSQL {pg_idle_share:.0%}", flush=True)
    print(f"[latency] sending {webhooks} webhooks", flush=True)  # a marker for profilers
    sender = await trio.run_process(
        [sys.executable, str(ROOT / "bench" / "http_load.py"), host, port, str(requests_file),
         "--rate", str(rate), "--connections", str(args.webhook_connections)],
        capture_stdout=True)
    requests_file.unlink()
    sent = json.loads(sender.stdout)
    sent_at = {int(i): t for i, t in sent["sent"].items()}
    ack_ms = list(sent["ack_ms"].values())
    got_at: dict[int, float] = {}
    with trio.move_on_after(30):
        while len(got_at) < webhooks:
            got_at = await lat.times()
            if len(got_at) < webhooks:
                await trio.sleep(0.5)
    cpu = cpu_s(pid) - cpu0
    gc.enable()
    lat_ms = [(got_at[i] - sent_at[i]) * 1000 for i in got_at if i in sent_at]
    if os.environ.get("BENCH_DUMP"):
        pathlib.Path(os.environ["BENCH_DUMP"]).write_text(json.dumps({"sent": sent_at, "got": got_at,
                                                                       "ack": sent["ack_ms"]}))
    r = {"connections": opened["open"], "webhooks": webhooks, "rate": rate, "delivered": len(lat_ms),
         "p50_ms": percentile(lat_ms, 0.5), "p99_ms": percentile(lat_ms, 0.99),
         "max_ms": max(lat_ms, default=float("nan")),
         "mean_ms": statistics.fmean(lat_ms) if lat_ms else float("nan"),
         "ack_p50_ms": percentile(ack_ms, 0.5), "ack_p99_ms": percentile(ack_ms, 0.99),
         "server_cpu_ms_per_webhook": cpu / max(1, len(lat_ms)) * 1000,
         "statuses": sent["statuses"], "idle_share": idle_share, "pg_idle_share": pg_idle_share, "sender_late_ms": sent["late_ms"],
         "sender_cpu_us": sent["cpu_s"] / max(1, webhooks) * 1e6}
    print(f"[latency] {r['delivered']}/{r['webhooks']} delivered; webhook→client p50 {r['p50_ms']:.1f} ms, "
          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (webhook 200 p50 {r['ack_p50_ms']:.1f} ms; "
          f"HTTP statuses {r['statuses']}; sender p99 lag {r['sender_late_ms']:.1f} ms, "
          f"{r['sender_cpu_us']:.0f} µs CPU per webhook)",
          flush=True)
    await lat.close()
    return r


def _ratio(a: float, b: float) -> str:
    """``a / b`` to two places, or n/a when ``b`` was too small to measure (a token round)."""
    return f"{a / b:.2f}" if b else "n/a"


def render(results: dict) -> str:
    f = results["fanout"]
    med = {side: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for side, rows in f["rounds"].items()}
    p, r = med["paycast"], med["reference"]
    rows = ["| measure | Paycast | `websockets` reference | ratio | goal |", "|---|---:|---:|---:|---:|",
            f"| server CPU per delivered frame (median of {len(f['rounds']['paycast'])} interleaved rounds; "
            f"Paycast: publishing over HTTP included) | **{p['server_us']:.1f} µs** (+ PostgreSQL "
            f"{p['pg_us']:.1f} µs) | {r['server_us']:.1f} µs | **{_ratio(p['server_us'], r['server_us'])} ×** | ≤ 1.5 × |",
            f"| frames/s delivered ({f['connections']:,} conns, {f['clients']} clients, {f['messages']} messages "
            f"a round) | **{p['per_s']:,.0f}/s** | {r['per_s']:,.0f}/s | {_ratio(p['per_s'], r['per_s'])} | "
            f"≥ 30,000/s |",
            f"| load generator CPU per frame (and its busy share of one core) | {p['gen_us']:.1f} µs "
            f"({p['gen_cpu_share']:.0%}) | {r['gen_us']:.1f} µs ({r['gen_cpu_share']:.0%}) | | spare CPU |"]
    if "hold" in results:
        h = results["hold"]
        rows.append(f"| RSS per idle connection ({h['server_open_after_hold']:,.0f} held {h['hold_s']:g} s; "
                    f"reference {h['ref_open']:,}) | **{h['per_conn_kb']:.1f} KB** | {h['ref_per_conn_kb']:.1f} KB | "
                    f"{h['per_conn_kb'] / max(h['ref_per_conn_kb'], 1e-9):.2f} | ≤ 40 KB |")
    for lat in results["latency"]:
        rows.append(f"| webhook → client p50 / p99 ({lat['connections']:,} conns, {lat['rate']:g} webhooks/s) | "
                    f"**{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} ms** (max {lat['max_ms']:.1f}; "
                    f"{lat['delivered']}/{lat['webhooks']} delivered; webhook 200 p50 {lat['ack_p50_ms']:.1f} ms; "
                    f"server {lat['server_cpu_ms_per_webhook']:.2f} ms CPU/webhook, idle {lat['idle_share']:.0%} of a core "
                    f"(PostgreSQL {lat['pg_idle_share']:.0%}); "
                    f"sender p99 lag "
                    f"{lat['sender_late_ms']:.1f} ms, {lat['sender_cpu_us']:.0f} µs CPU/webhook) | | | p99 ≤ 25 ms |")
    per_round = "; ".join(f"{a['server_us']:.1f} vs {b['server_us']:.1f}"
                          for a, b in zip(f["rounds"]["paycast"], f["rounds"]["reference"]))
    rows += ["", f"Per round, server µs/frame Paycast vs reference: {per_round}."]
    return "\n".join(rows)


def save(table: str, args, limits: tuple[int, int]) -> None:
    text = [
        f"- command: `{command_line('bench_realtime.py')}`",
        f"- machine: {machine_line()}",
        f"- clients: `websockets` asyncio client in {args.gen_procs} separate load-generator process(es) on the "
        f"same machine (they share the 2 cores with the servers and PostgreSQL); open-files limit {limits[0]}",
        f"- database: {database_line(args)}",
        f"- machine load average (1 min) at start / end: {LOAD_AT_START:.2f} / {os.getloadavg()[0]:.2f} "
        "(other sessions may share this machine)",
    ]
    if args.note:
        text.append(f"- note: {args.note}")
    write_results(f"Realtime gateway vs `websockets` reference — {utc_now()}", text, [table])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", type=int, default=10_000, help="connections to open and hold (10000; 0 skips)")
    parser.add_argument("--hold-s", type=float, default=10, help="seconds to hold them idle before measuring (10)")
    parser.add_argument("--handshakes", type=int, default=200, help="concurrent WebSocket handshakes (200)")
    parser.add_argument("--fanout-conns", type=int, default=1000, help="fan-out connections (1000)")
    parser.add_argument("--fanout-clients", type=int, default=1, help="clients they belong to (1)")
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds, each Paycast then reference (3)")
    parser.add_argument("--gen-procs", type=int, default=1, help="load-generator processes (1)")
    parser.add_argument("--fanout-messages", type=int, default=400, help="messages published (400)")
    parser.add_argument("--publishers", type=int, default=8,
                        help="concurrent publish requests (8; one client's publishes serialise on its row anyway)")
    parser.add_argument("--message-bytes", type=int, default=100, help="payload size of each message (100)")
    parser.add_argument("--latency-conns", type=int, default=5000, help="connections during the latency run (5000)")
    parser.add_argument("--webhooks", type=int, default=3000, help="webhooks sent per latency round (3000)")
    parser.add_argument("--webhook-rate", type=float, nargs="+", default=[300],
                        help="webhooks per second, open loop; one latency round per rate (300)")
    parser.add_argument("--idle-s", type=float, default=3,
                        help="seconds the server's idle CPU is measured before the webhooks (3)")
    parser.add_argument("--webhook-connections", type=int, default=64,
                        help="keep-alive connections the webhook sender uses (64)")
    parser.add_argument("--dsn", default=os.environ.get("PAYCAST_DATABASE_URL"),
                        help="use this PostgreSQL (default: $PAYCAST_DATABASE_URL, else an embedded one)")
    add_save_arguments(parser)
    args = parser.parse_args(argv)

    from tests.support import ADMIN_TOKEN, ServerProcess

    # The latency run leaves its payments processing until their webhook comes;
    # a payment reconciler waking up for them mid-run (their 60 s deadline)
    # would be measured instead of the webhook path (as in bench_compare.py).
    server_env = {"PAYCAST_LOG_LEVEL": "WARNING", "PAYCAST_PROCESSING_DEADLINE_S": "3600",
                  **parse_server_env(parser, args.server_env)}
    limits = raise_nofile()
    needed = args.hold + 200
    if limits[0] < needed:
        print(f"warning: open-files limit {limits[0]} is below the {needed} this run needs", file=sys.stderr)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = None
    pg = None
    server = None
    reference = None
    try:
        dsn = args.dsn
        if not dsn:
            tmp = tempfile.mkdtemp(prefix="paycast-rtbench-", dir="/tmp")
            pg = embedded_postgres(pathlib.Path(tmp), "paycast_bench")
            dsn = pg.dsn("paycast_bench")
            print(f"embedded PostgreSQL in {tmp}", flush=True)
        server = ServerProcess(dsn, **server_env).start(timeout=60)
        reference = Reference().start()
        args.pg_pids = postgres_pids(pg)
        with server.client(ADMIN_TOKEN) as admin:
            created = admin.post("/admin/merchants", json={"name": "realtime bench"}).json()
        merchant_id, api_key = created["merchant"]["id"], created["api_key"]
        with server.client(api_key) as c:  # creates the deployment's realtime key if needed
            assert c.post("/v1/realtime/tokens", json={"client_id": "cus_bench"}).status_code == 201
        key = realtime_token_key(dsn)
        print(f"server pid {server.proc.pid} at {server.url}", flush=True)
        results = trio.run(run, args, server, merchant_id, api_key, key, reference)
        table = render(results)
        print("\n" + table)
        if not args.no_save:
            save(table, args, limits)
            print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if reference is not None:
            reference.stop()
        if server is not None:
            server.stop()
            if os.environ.get("BENCH_SERVER_LOG"):
                pathlib.Path(os.environ["BENCH_SERVER_LOG"]).write_text("".join(server.stderr_lines))
        if pg is not None:
            try:
                pg.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"could not stop PostgreSQL: {exc}", file=sys.stderr)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
