#!/usr/bin/env python3
"""Roles benchmark: one ``--role all`` process against api + realtime + worker
processes, at the same load, on one embedded PostgreSQL. Not a test: it
measures and reports, it never asserts on timings.

    .venv/bin/python bench/bench_roles.py [--duration 8] [--connections 16] [--clients 200] [--rate 50]

For each layout, interleaved over ``--rounds`` (each on a fresh database):

  1. payments/s: wrk, ``--connections`` connections, ``POST /v1/payments``
     with ``"confirm": true`` (card) to the (api) port for ``--duration`` s;
     with the CPU seconds every Paycast process and PostgreSQL spent per payment.
  2. webhook→client: ``--clients`` WebSocket clients on the (realtime) port,
     each with a UPI payment left ``processing``; signed ``mockstripe``
     webhooks sent open-loop at ``--rate``/s to the (api) port; latency from
     sending a webhook to its client receiving ``payment.succeeded`` (p50/p99).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import trio  # noqa: E402
from trio_websocket import open_websocket_url  # noqa: E402

from bench.common import Scenario, load_average, machine_facts, run_wrk  # noqa: E402
from domain.signatures import stripe_header  # noqa: E402

ADMIN = "adm_bench_roles"
LAYOUTS = {"all": ["all"], "api+realtime+worker": ["api", "realtime", "worker"]}
PAYMENT_BODY = json.dumps({"amount": 1000, "currency": "INR", "confirm": True,
                           "payment_method": {"type": "card", "card": {"number": "4242424242424242"}}},
                          separators=(",", ":"))


class Proc:
    """One ``run.py serve --role R`` process."""

    def __init__(self, dsn: str, role: str, extra: dict[str, str]) -> None:
        env = dict(os.environ, PAYCAST_DATABASE_URL=dsn, PAYCAST_PORT="0", PAYCAST_ADMIN_TOKEN=ADMIN,
                   PAYCAST_LOG_LEVEL="WARNING", PAYCAST_RATE_LIMIT_RPS="0", **extra)
        self.role = role
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", "--role", role], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if '"listening"' in line:
                self.url = json.loads(line)["url"]
                return
        raise RuntimeError(f"{role} process did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(args, api_url: str, rt_url: str, key: str) -> dict:
    """Webhook → client latency: see the module docstring."""
    n = args.clients
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        pays, tokens = [None] * n, [None] * n
        limiter = trio.Semaphore(8)

        async def make(i: int) -> None:
            async with limiter:
                r = await api.post("/v1/payments", json={
                    "amount": 1000, "currency": "INR", "customer_id": f"cus_{i}", "connector": "mockstripe",
                    "payment_method": {"type": "upi", "upi": {"vpa": "pending@upi"}}, "confirm": True})
                r.raise_for_status()
                pays[i] = r.json()
                r = await api.post("/v1/realtime/tokens", json={"client_id": f"cus_{i}"})
                r.raise_for_status()
                tokens[i] = r.json()["token"]

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(make, i)

    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    done = trio.Event()
    ws_base = rt_url.replace("http://", "ws://") + "/v1/realtime?token="

    async def client(i: int, ready: trio.Semaphore, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_websocket_url(ws_base + tokens[i]) as ws:
            task_status.started()
            while True:
                msg = await ws.get_message()
                if '"ping"' in msg:
                    await ws.send_message('{"type":"pong"}')
                elif '"payment.succeeded"' in msg:
                    got[i] = time.perf_counter()
                    if len(got) == n:
                        done.set()
                    return

    async with trio.open_nursery() as nursery:
        for i in range(n):
            await nursery.start(client, i, None)
        async with httpx.AsyncClient(base_url=api_url, timeout=60) as hooks:
            async def hook(i: int) -> None:
                pay = pays[i]
                body = json.dumps({"id": f"evt_roles_{pay['id']}", "type": "payment_intent.succeeded",
                                   "created": int(time.time()),
                                   "data": {"object": {"id": pay["attempts"][0]["connector_txn_id"],
                                                       "amount": 1000, "currency": "inr", "status": "succeeded",
                                                       "metadata": {"payment_id": pay["id"]}}}}).encode()
                headers = {"Stripe-Signature": stripe_header("whsec_dev_mockstripe", body, int(time.time())),
                           "Content-Type": "application/json"}
                sent[i] = time.perf_counter()
                (await hooks.post("/webhooks/mockstripe", content=body, headers=headers)).raise_for_status()

            start = trio.current_time()
            async with trio.open_nursery() as senders:
                for i in range(n):
                    await trio.sleep_until(start + i / args.rate)  # open loop
                    senders.start_soon(hook, i)
            with trio.move_on_after(30):
                await done.wait()
        nursery.cancel_scope.cancel()
    ms = [(got[i] - sent[i]) * 1000 for i in got if i in sent]
    return {"delivered": len(ms), "p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def run_layout(args, layout: str, dsn: str, pg_pid: int | None, workdir: pathlib.Path) -> dict:
    procs: dict[str, Proc] = {}
    try:
        for role in LAYOUTS[layout]:
            extra = {"PAYCAST_SIM_WEBHOOK_URL": procs["api"].url} if role == "worker" else {}
            procs[role] = Proc(dsn, role, extra)
        api_url = (procs.get("api") or procs["all"]).url
        rt_url = (procs.get("realtime") or procs["all"]).url
        key = httpx.post(f"{api_url}/admin/merchants", json={"name": "bench"},
                         headers={"Authorization": f"Bearer {ADMIN}"}).json()["api_key"]
        pids = [p.proc.pid for p in procs.values()]
        time.sleep(1)
        scenario = Scenario("roles_payments", "POST", "/v1/payments", 201,
                            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, PAYMENT_BODY)
        cpu0, pg0 = cpu_of(pids), cpu_of([pg_pid] if pg_pid else [])
        wrk = run_wrk(api_url, scenario, args.connections, args.duration, workdir, lambda _p: None)
        cpu, pg_cpu = cpu_of(pids) - cpu0, cpu_of([pg_pid] if pg_pid else []) - pg0
        ok = max(1, wrk["ok"])
        result = {"layout": layout, "rps": wrk["ok"] / wrk["duration_s"], "p99_ms": wrk["p99_ms"],
                  "bad": wrk["bad"], "cpu_us": cpu / ok * 1e6, "pg_cpu_us": pg_cpu / ok * 1e6}
        result.update({f"hook_{k}": v for k, v in trio.run(latency, args, api_url, rt_url, key).items()})
        print(json.dumps(result), flush=True)
        return result
    finally:
        for p in reversed(list(procs.values())):
            p.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)

    import asyncpg  # noqa: F401 - the embedded server's databases are made through it

    from pg.cluster import EmbeddedPostgres
    from bench.common import postmaster_pid

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pcroles", dir="/tmp"))
    pg = EmbeddedPostgres(tmp / "pg")
    rows = []
    load_before = load_average()
    try:
        admin_dsn = pg.start()
        pg_pid = postmaster_pid(pg)
        for r in range(args.rounds):
            for layout in LAYOUTS:
                name = f"roles_{r}_{layout.replace('+', '_')}"
                pg.ensure_database(name)
                rows.append(run_layout(args, layout, pg.dsn(name), pg_pid, tmp))
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table = ["| layout | payments/s | p99 ms | Paycast CPU µs/payment | PostgreSQL CPU µs/payment "
             "| webhook→client p50 ms | p99 ms | delivered |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        table.append(f"| {row['layout']} | {row['rps']:.0f} | {row['p99_ms']:.1f} | {row['cpu_us']:.0f} "
                     f"| {row['pg_cpu_us']:.0f} | {row['hook_p50_ms']:.1f} | {row['hook_p99_ms']:.1f} "
                     f"| {row['hook_delivered']}/{args.clients} |")
    text = "\n".join(table)
    print(text)
    if not args.no_save:
        facts = machine_facts()
        with RESULTS.open("a") as f:
            f.write(f"\n## Roles: one `--role all` process vs api + realtime + worker "
                    f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                    f"`.venv/bin/python bench/bench_roles.py --duration {args.duration:g} --connections "
                    f"{args.connections} --clients {args.clients} --rate {args.rate:g} --rounds {args.rounds}`"
                    f" — {facts['nproc']} cores ({facts['cpu']}), **shared with other sessions** (load average "
                    f"before: {load_before}, after: {load_average()}); one embedded PostgreSQL; wrk, "
                    f"`confirm: true` card payments; webhook→client at {args.rate:g} webhooks/s open loop."
                    + (f" {args.note}" if args.note else "") + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
