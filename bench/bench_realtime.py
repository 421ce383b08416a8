#!/usr/bin/env python3
"""Paycast realtime gateway load tool (trio-websocket clients). Not a test: it
measures and reports, it never asserts on timings.

    .venv/bin/python bench/bench_realtime.py [--hold 10000] [--fanout-conns 1000 --fanout-clients 10]
                                             [--latency-conns 1000 --webhooks 1000 --webhook-rate 100]

Against one real ``run.py serve`` process on a free port it measures, in one run:

  1. hold: ``--hold`` idle WebSocket connections (distinct clients) opened and
     held; how many the server reports open, and the server's RSS growth per
     connection (goal ≤ 100 KB). The baseline RSS is taken after a warm-up
     batch of connections was opened and closed, so allocator warm-up is not
     counted as per-connection cost.
  2. fan-out: ``--fanout-conns`` connections spread over ``--fanout-clients``
     clients (every connection of a client gets each of its messages);
     ``--fanout-messages`` messages published round robin through
     ``POST /v1/realtime/publish``; delivered messages/s = frames received by
     all clients ÷ time from the first publish to the last frame (goal ≥ 20,000/s).
  3. latency: ``--latency-conns`` connections, one client each, each with a
     payment left ``processing`` (``pending@upi``); signed ``mockstripe``
     webhooks are then sent open-loop at ``--webhook-rate``/s; latency is from
     sending the webhook to the client receiving its ``payment.succeeded``
     frame (p50/p99; goal p99 ≤ 50 ms).

Tokens are minted with the deployment's realtime key read from the database
(the key every process of the deployment shares), so 10,000 tokens cost no
requests; one token is still issued over HTTP first, which creates the key.

Database: ``--dsn`` or ``PAYCAST_DATABASE_URL``; otherwise an embedded
PostgreSQL in a fresh temp dir under /tmp, removed at the end. The open-files
limit is raised to its hard maximum for this process and the server.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import resource
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402
from trio_websocket import ConnectionClosed, connect_websocket_url  # noqa: E402

LOAD_AT_START = os.getloadavg()[0]
PING = '{"type":"ping"}'
PONG = '{"type":"pong"}'
EVENT_PREFIX = '{"type":"event"'


# --------------------------------------------------------------------------- helpers


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (inherited by the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Clients:
    """Many trio-websocket connections living in one nursery, each pumped by a
    task that answers pings and hands other frames to ``on_frame``."""

    def __init__(self, nursery: trio.Nursery, on_frame=None) -> None:
        self.nursery = nursery
        self.on_frame = on_frame or (lambda idx, msg: None)
        self.open: list = []
        self.failed = 0

    async def connect_all(self, urls: list[str], concurrency: int = 200) -> float:
        """Open one connection per URL (welcome received); returns the seconds it took."""
        limiter = trio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(idx: int, url: str) -> None:
            async with limiter:
                try:
                    with trio.fail_after(60):
                        ws = await connect_websocket_url(self.nursery, url, message_queue_size=4)
                    welcome = await ws.get_message()
                    assert welcome.startswith('{"type":"welcome"'), welcome
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    self.failed += 1
                    if self.failed <= 3:
                        print(f"  connect failed: {type(exc).__name__}: {exc}", flush=True)
                    return
            self.open.append(ws)
            self.nursery.start_soon(self._pump, idx, ws)

        async with trio.open_nursery() as n:
            for idx, url in enumerate(urls):
                n.start_soon(one, idx, url)
        return time.perf_counter() - started

    async def _pump(self, idx: int, ws) -> None:
        try:
            while True:
                msg = await ws.get_message()
                if msg == PING:
                    await ws.send_message(PONG)
                else:
                    self.on_frame(idx, msg)
        except ConnectionClosed:
            pass

    async def close_all(self, concurrency: int = 500) -> None:
        limiter = trio.Semaphore(concurrency)

        async def one(ws) -> None:
            async with limiter:
                with trio.move_on_after(5):
                    await ws.aclose()

        async with trio.open_nursery() as n:
            for ws in self.open:
                n.start_soon(one, ws)
        self.open = []


# --------------------------------------------------------------------------- the run


async def run(args, server, merchant_id: str, api_key: str, key: bytes) -> dict:
    from domain.realtime import Claims, sign_token
    from domain.signatures import stripe_header

    ws_base = server.url.replace("http://", "ws://") + "/v1/realtime?token="
    expiry = int(time.time()) + 6 * 3600

    def url(client_id: str, device_id: str | None = None) -> str:
        return ws_base + sign_token(key, Claims(merchant_id, client_id, device_id, expiry))

    pid = server.proc.pid
    results: dict = {}
    api = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60,
                            limits=httpx.Limits(max_connections=32))

    async def server_open_connections() -> float:
        text = (await api.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("paycast_realtime_connections "):
                return float(line.split()[1])
        return float("nan")

    async def settle(expected: float, timeout: float = 30) -> float:
        with trio.move_on_after(timeout):
            while (n := await server_open_connections()) != expected:
                await trio.sleep(0.2)
        return await server_open_connections()

    # ---------------------------------------------------------------- 1. hold
    print(f"[hold] warm-up: {min(500, args.hold)} connections opened and closed", flush=True)
    async with trio.open_nursery() as nursery:
        warm = Clients(nursery)
        await warm.connect_all([url(f"cus_warm_{i}") for i in range(min(500, args.hold))])
        await warm.close_all()
    await settle(0)
    await trio.sleep(1)
    baseline = rss_kb(pid)
    print(f"[hold] baseline server RSS {baseline / 1024:.1f} MiB; opening {args.hold} connections", flush=True)
    async with trio.open_nursery() as nursery:
        hold = Clients(nursery)
        seconds = await hold.connect_all([url(f"cus_hold_{i}") for i in range(args.hold)], args.handshakes)
        held = await settle(len(hold.open))
        await trio.sleep(args.hold_s)
        after = rss_kb(pid)
        still = await server_open_connections()
        per_conn_kb = (after - baseline) / max(1, held)
        results["hold"] = {"target": args.hold, "opened": len(hold.open), "failed": hold.failed,
                           "server_open": held, "server_open_after_hold": still, "hold_s": args.hold_s,
                           "connect_s": seconds, "rss_base_mib": baseline / 1024, "rss_mib": after / 1024,
                           "per_conn_kb": per_conn_kb}
        print(f"[hold] {len(hold.open)} open ({hold.failed} failed) in {seconds:.1f}s; server reports {held:.0f}, "
              f"{still:.0f} after {args.hold_s:g}s; RSS {after / 1024:.1f} MiB → {per_conn_kb:.1f} KB/conn",
              flush=True)
        await hold.close_all()
    await settle(0, timeout=60)

    # ---------------------------------------------------------------- 2. fan-out
    per_client = max(1, args.fanout_conns // args.fanout_clients)
    expected = args.fanout_messages * per_client
    received = 0
    done = trio.Event()

    def count(_idx: int, msg: str) -> None:
        nonlocal received
        if msg.startswith(EVENT_PREFIX):
            received += 1
            if received >= expected:
                done.set()

    print(f"[fan-out] {args.fanout_clients} clients × {per_client} connections; "
          f"{args.fanout_messages} messages", flush=True)
    async with trio.open_nursery() as nursery:
        fan = Clients(nursery, count)
        await fan.connect_all([url(f"cus_fan_{i % args.fanout_clients}", f"dev_{i}")
                               for i in range(args.fanout_clients * per_client)], args.handshakes)
        payload = {"text": "x" * args.message_bytes}
        limiter = trio.Semaphore(args.publishers)
        cpu0 = cpu_s(pid)
        client_cpu0 = cpu_s(os.getpid())
        started = time.perf_counter()

        async def put(i: int) -> None:
            async with limiter:
                r = await api.post("/v1/realtime/publish", json={
                    "client_id": f"cus_fan_{i % args.fanout_clients}", "event": {"type": "bench", "data": payload}})
                r.raise_for_status()

        async with trio.open_nursery() as publishers:
            for i in range(args.fanout_messages):
                publishers.start_soon(put, i)
        published = time.perf_counter() - started
        with trio.move_on_after(60):
            await done.wait()
        elapsed = time.perf_counter() - started
        cpu = cpu_s(pid) - cpu0
        client_cpu = cpu_s(os.getpid()) - client_cpu0
        results["fanout"] = {"connections": len(fan.open), "clients": args.fanout_clients,
                             "messages": args.fanout_messages, "expected": expected, "delivered": received,
                             "seconds": elapsed, "publish_s": published, "per_s": received / elapsed,
                             "server_cpu_us_per_delivery": cpu / max(1, received) * 1e6,
                             "client_cpu_us_per_frame": client_cpu / max(1, received) * 1e6}
        print(f"[fan-out] {received}/{expected} delivered in {elapsed:.2f}s (publishing took {published:.2f}s) → "
              f"{received / elapsed:,.0f}/s; server CPU {cpu / max(1, received) * 1e6:.1f} µs/delivery", flush=True)
        await fan.close_all()
    await settle(0, timeout=60)

    # ---------------------------------------------------------------- 3. latency
    results["latency"] = []
    for round_no, rate in enumerate(args.webhook_rate):
        results["latency"].append(await _latency_round(args, server, api, url, stripe_header, round_no, rate))
    await api.aclose()
    return results


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
    sent_at: dict[int, float] = {}
    got_at: dict[int, float] = {}
    all_in = trio.Event()
    ack_ms: list[float] = []
    webhooks = min(n, args.webhooks)

    def on_frame(idx: int, msg: str) -> None:
        if msg.startswith(EVENT_PREFIX) and '"payment.succeeded"' in msg:
            got_at[idx] = time.perf_counter()
            if len(got_at) == webhooks:
                all_in.set()

    async with trio.open_nursery() as nursery:
        lat = Clients(nursery, on_frame)
        await lat.connect_all([url(f"cus_lat{round_no}_{i}") for i in range(n)], args.handshakes)
        hooks = httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=64))
        interval = 1 / rate

        async def hook(i: int) -> None:
            pay = pays[i]
            body = json.dumps({"id": f"evt_bench_{i}_{pay['id']}", "type": "payment_intent.succeeded",
                               "created": int(time.time()),
                               "data": {"object": {"id": pay["attempts"][0]["connector_txn_id"],
                                                   "amount": pay["amount"], "currency": "inr",
                                                   "status": "succeeded",
                                                   "metadata": {"payment_id": pay["id"]}}}}).encode()
            headers = {"Stripe-Signature": stripe_header("whsec_dev_mockstripe", body, int(time.time())),
                       "Content-Type": "application/json"}
            sent_at[i] = time.perf_counter()
            r = await hooks.post("/webhooks/mockstripe", content=body, headers=headers)
            ack_ms.append((time.perf_counter() - sent_at[i]) * 1000)
            r.raise_for_status()

        await trio.sleep(1)  # let the connection burst settle
        # The load generator's own garbage-collection pauses (hundreds of ms with
        # thousands of client objects) would be counted as server latency.
        gc.collect()
        gc.disable()
        cpu0 = cpu_s(pid)
        start = trio.current_time()
        async with trio.open_nursery() as senders:
            for i in range(webhooks):
                await trio.sleep_until(start + i * interval)  # open loop: a fixed schedule
                senders.start_soon(hook, i)
        with trio.move_on_after(30):
            await all_in.wait()
        cpu = cpu_s(pid) - cpu0
        gc.enable()
        await hooks.aclose()
        lat_ms = [(got_at[i] - sent_at[i]) * 1000 for i in got_at if i in sent_at]
        r = {"connections": len(lat.open), "webhooks": webhooks, "rate": rate, "delivered": len(lat_ms),
             "p50_ms": percentile(lat_ms, 0.5), "p99_ms": percentile(lat_ms, 0.99),
             "max_ms": max(lat_ms, default=float("nan")),
             "mean_ms": statistics.fmean(lat_ms) if lat_ms else float("nan"),
             "ack_p50_ms": percentile(ack_ms, 0.5), "ack_p99_ms": percentile(ack_ms, 0.99),
             "server_cpu_ms_per_webhook": cpu / max(1, len(lat_ms)) * 1000}
        print(f"[latency] {r['delivered']}/{r['webhooks']} delivered; webhook→client p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (webhook 200 p50 {r['ack_p50_ms']:.1f} ms)",
              flush=True)
        await lat.close_all()
    return r


def render(results: dict) -> str:
    h, f = results["hold"], results["fanout"]
    latency_rows = [
        f"| webhook → client latency p50 / p99 ({lat['connections']:,} conns, {lat['rate']:g} webhooks/s) "
        f"| **{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} ms** (max {lat['max_ms']:.1f}; {lat['delivered']}"
        f"/{lat['webhooks']} delivered; webhook 200 p50 / p99 {lat['ack_p50_ms']:.1f} / {lat['ack_p99_ms']:.1f} ms"
        f"; server CPU {lat['server_cpu_ms_per_webhook']:.1f} ms/webhook) | p99 ≤ 50 ms |"
        for lat in results["latency"]]
    return "\n".join([
        "| measure | result | goal |",
        "|---|---:|---:|",
        f"| connections held (server-reported, after {h['hold_s']:g} s idle) | {h['server_open_after_hold']:,.0f} "
        f"of {h['target']:,} | {h['target']:,} |",
        f"| server RSS per connection | **{h['per_conn_kb']:.1f} KB** ({h['rss_base_mib']:.0f} → "
        f"{h['rss_mib']:.0f} MiB) | ≤ 100 KB |",
        f"| fan-out delivered messages/s ({f['connections']:,} conns, {f['clients']} clients, "
        f"{f['messages']} messages) | **{f['per_s']:,.0f}/s** ({f['delivered']:,}/{f['expected']:,} in "
        f"{f['seconds']:.2f} s) | ≥ 20,000/s |",
        f"| fan-out server capacity: 1 s of server CPU ÷ server CPU per delivered frame (publishing included) "
        f"| {1e6 / max(f['server_cpu_us_per_delivery'], 1e-9):,.0f}/s per server core "
        f"({f['server_cpu_us_per_delivery']:.1f} µs/frame) | (estimate) |",
        *latency_rows,
        "",
        f"Details: {h['opened']:,} opened in {h['connect_s']:.1f} s ({h['failed']} failed). Fan-out: server CPU "
        f"{f['server_cpu_us_per_delivery']:.1f} µs per delivered frame (publishing included), load-generator CPU "
        f"{f['client_cpu_us_per_frame']:.1f} µs per received frame; publishing took {f['publish_s']:.2f} s.",
    ])


def save(table: str, args, limits: tuple[int, int]) -> None:
    command = ".venv/bin/python bench/bench_realtime.py " + shlex.join(sys.argv[1:])
    cpu = "?"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    db = "external (--dsn / PAYCAST_DATABASE_URL)" if args.dsn else "embedded PostgreSQL (fresh temp dir)"
    text = [
        f"## Realtime gateway — {when}",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: nproc={os.cpu_count()}, {cpu}, Linux {platform.release()}, Python {platform.python_version()}",
        "- clients: trio-websocket in one process on the same machine (they share the 2 cores with the server "
        f"and PostgreSQL); open-files limit {limits[0]}",
        f"- database: {db}",
        f"- machine load average (1 min) at start / end: {LOAD_AT_START:.2f} / {os.getloadavg()[0]:.2f} "
        "(other sessions may share this machine)",
    ]
    if args.note:
        text.append(f"- note: {args.note}")
    text += ["", table, ""]
    header = "" if RESULTS.exists() else "# Benchmark results\n\n"
    with RESULTS.open("a") as f:
        f.write(header + "\n".join(text) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", type=int, default=10_000, help="connections to open and hold (10000)")
    parser.add_argument("--hold-s", type=float, default=10, help="seconds to hold them idle before measuring (10)")
    parser.add_argument("--handshakes", type=int, default=200, help="concurrent WebSocket handshakes (200)")
    parser.add_argument("--fanout-conns", type=int, default=1000, help="fan-out connections (1000)")
    parser.add_argument("--fanout-clients", type=int, default=4, help="clients they belong to (4)")
    parser.add_argument("--fanout-messages", type=int, default=400, help="messages published (400)")
    parser.add_argument("--publishers", type=int, default=32, help="concurrent publish requests (32)")
    parser.add_argument("--message-bytes", type=int, default=100, help="payload size of each message (100)")
    parser.add_argument("--latency-conns", type=int, default=1000, help="connections during the latency run (1000)")
    parser.add_argument("--webhooks", type=int, default=1000, help="webhooks sent (1000)")
    parser.add_argument("--webhook-rate", type=float, nargs="+", default=[25, 100],
                        help="webhooks per second, open loop; one latency round per rate (25 100)")
    parser.add_argument("--dsn", default=os.environ.get("PAYCAST_DATABASE_URL"),
                        help="use this PostgreSQL (default: $PAYCAST_DATABASE_URL, else an embedded one)")
    parser.add_argument("--server-env", action="append", default=[], metavar="PAYCAST_X=VALUE",
                        help="extra setting for the server process (repeatable)")
    parser.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--note", default="", help="one line saved with the results")
    args = parser.parse_args(argv)

    from tests.support import ADMIN_TOKEN, ServerProcess, db_fetch

    server_env = {"PAYCAST_LOG_LEVEL": "WARNING"}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("PAYCAST_"):
            parser.error(f"--server-env wants PAYCAST_X=VALUE, got {item!r}")
        server_env[name] = value
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
    try:
        dsn = args.dsn
        if not dsn:
            from storage.embedded import EmbeddedPostgres

            tmp = tempfile.mkdtemp(prefix="paycast-rtbench-", dir="/tmp")
            pg = EmbeddedPostgres(pathlib.Path(tmp))
            pg.start()
            pg.ensure_database("paycast_bench")
            dsn = pg.dsn("paycast_bench")
            print(f"embedded PostgreSQL in {tmp}", flush=True)
        server = ServerProcess(dsn, **server_env).start(timeout=60)
        with server.client(ADMIN_TOKEN) as admin:
            created = admin.post("/admin/merchants", json={"name": "realtime bench"}).json()
        merchant_id, api_key = created["merchant"]["id"], created["api_key"]
        with server.client(api_key) as c:  # creates the deployment's realtime key if needed
            assert c.post("/v1/realtime/tokens", json={"client_id": "cus_bench"}).status_code == 201
        key = db_fetch(dsn, "SELECT value FROM paycast_secrets WHERE name = 'realtime_token_key'")[0]["value"]
        print(f"server pid {server.proc.pid} at {server.url}", flush=True)
        results = trio.run(run, args, server, merchant_id, api_key, key.encode())
        table = render(results)
        print("\n" + table)
        if not args.no_save:
            save(table, args, limits)
            print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
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
