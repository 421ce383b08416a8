#!/usr/bin/env python3
"""Paycast against the FastAPI + uvicorn + asyncpg reference (bench/reference/), in one run.

    make bench                        # 10 s per cell; make bench BENCH_SECONDS=5 is the quick mode
    .venv/bin/python bench/bench_compare.py --duration 5 [--workers 1 2] [--rounds 2] [--no-save]

One embedded PostgreSQL in a fresh temp dir holds two databases: ``paycast_bench`` for
``run.py serve`` (``--workers N`` processes on one port when N > 1) and ``reference``
for ``python -m bench.reference``. For each flow, wrk (1 thread, ``--connections``, 32)
runs against Paycast and then against the reference, interleaved, each after an
unmeasured warm-up:

- ``create_confirm``: ``POST /v1/payments`` then ``POST /v1/payments/{id}/confirm`` with an
  ``Idempotency-Key``; the Lua script queues each created id and the next request of any
  connection confirms it. Unit: a confirmed (``succeeded``) payment.
- ``confirm_true``: ``POST /v1/payments`` with ``"confirm": true``. Unit: a payment.
- ``webhooks``: signed ``POST /webhooks/mockstripe``, distinct event ids (signed right
  before the run), stored *and applied*. Unit: a webhook stored (200). The events name
  real ``pending@upi`` payments on both sides: Paycast (``--role all``) applies them
  through its inbox processor, the reference (``?apply=1``) in the request's own
  transaction. Paycast's CPU is billed until its processor has drained what the run
  stored (the drain's seconds are printed), so both sides pay for the same work.
- ``webhooks_api``: the same webhooks *stored only*: a Paycast ``--role api`` process of
  its own (database ``paycast_api``; it stores and applies nothing else) against the
  reference without ``?apply``.
- ``bare``: ``GET /healthz`` against ``GET /ping``. Unit: a request.

Per flow and server: units/s, p50/p99 per HTTP request (the create → confirm flow makes two
requests per unit), server CPU µs per unit (psutil, the server's process tree), PostgreSQL
CPU µs per unit (psutil over the postmaster's tree), database round trips per unit
(Paycast: the ``paycast_db_round_trips_total`` counter of ``/metrics`` when it exists, summed
over the worker processes; the reference: its ``/stats`` counter), errors, and the ratio Paycast ÷
reference. The table goes to stdout and, with the command, to bench/RESULTS.md. Nothing is
asserted: a benchmark is a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS, CpuMeter, Scenario, add_save_arguments, cleanup_on_exit, command_line, embedded_postgres, fmt_ms, generator_description,
    load_average, machine_line, parse_server_env, postmaster_pid, resolve_generator, run_wrk, stop_everything,
    utc_now, write_results,
)

FLOWS = ("create_confirm", "confirm_true", "webhooks", "webhooks_api", "bare")
WEBHOOK_FLOWS = ("webhooks", "webhooks_api")
# Not run by default: `--flows confirm_true confirm_true_customer` is the A/B of a customer_id.
EXTRA_FLOWS = ("confirm_true_customer",)
UNITS = {"create_confirm": "payments", "confirm_true": "payments", "confirm_true_customer": "payments",
         "webhooks": "webhooks stored", "webhooks_api": "webhooks stored", "bare": "requests"}
LABELS = {"create_confirm": "`POST /v1/payments` → `/confirm` (Idempotency-Key)",
          "confirm_true": "`POST /v1/payments` `\"confirm\": true`",
          "confirm_true_customer": "`POST /v1/payments` `\"confirm\": true` with a `customer_id`",
          "webhooks": "signed webhooks stored and applied (`POST /webhooks/mockstripe`; Paycast `--role all`, "
                      "the reference applies in the request)",
          "webhooks_api": "signed webhooks stored only (Paycast `--role api`, the reference without `?apply`)",
          "bare": "bare route (`/healthz` vs `/ping`)"}
GOALS = {"create_confirm": 0.3, "confirm_true": 0.6, "webhooks": 0.6, "webhooks_api": 0.6}
CARD = {"type": "card", "card": {"number": "4242424242424242"}}
WEBHOOK_SECRET = "whsec_dev_mockstripe"
PENDING_PAYMENTS = 200
DRAIN_TIMEOUT_S = 120
# Settings for the Paycast processes: no per-key rate limit (the reference has none),
# and no reconciliation of the bench's pending@upi payments during the run.
PAYCAST_ENV = {"PAYCAST_RATE_LIMIT_RPS": "0", "PAYCAST_PROCESSING_DEADLINE_S": "3600"}


# --------------------------------------------------------------------------- wrk scenarios

def _lua(value: str) -> str:
    return json.dumps(value)


def payment_body(*, confirm: bool = False, customer: bool = False, merchant: int | None = None) -> str:
    """A card payment that succeeds; ``merchant`` goes into metadata so the Lua script can read it back."""
    body: dict = {"amount": 1000, "currency": "INR", "payment_method": CARD}
    if confirm:
        body["confirm"] = True
    if customer:  # Paycast notifies realtime receivers of a customer's payments
        body["customer_id"] = "cus_bench"
    if merchant is not None:
        body["metadata"] = {"bench_merchant": str(merchant)}
    return json.dumps(body, separators=(",", ":"))


def create_confirm_lua(api_keys: list[str], customer: bool) -> str:
    """Create, then confirm with an Idempotency-Key: created ids wait in a FIFO for the next request.

    wrk's Lua API has no per-connection state, so a create's response queues its id and
    whichever connection asks for a request next confirms it; every payment is created
    and confirmed once, with at most ``connections`` confirms pending. Creates go round
    robin over the merchants; the merchant's index comes back in the payment's metadata,
    so its confirm carries the same key.
    """
    keys = ", ".join(_lua("Bearer " + k) for k in api_keys)
    bodies = ", ".join(_lua(payment_body(customer=customer, merchant=i + 1)) for i in range(len(api_keys)))
    return f"""
local keys = {{{keys}}}
local bodies = {{{bodies}}}
local next_key = 0
local queue, head, tail = {{}}, 1, 0
local function headers(k)
  return {{["Authorization"] = keys[k], ["Content-Type"] = "application/json"}}
end
function request()
  if head <= tail then
    local item = queue[head]; queue[head] = nil; head = head + 1
    local h = headers(item.k)
    h["Idempotency-Key"] = "bench_" .. item.id
    return wrk.format("POST", "/v1/payments/" .. item.id .. "/confirm", h, "{{}}")
  end
  next_key = next_key % #keys + 1
  return wrk.format("POST", "/v1/payments", headers(next_key), bodies[next_key])
end
local function fail(status)
  bad = bad + 1
  if bad <= 5 then bad_codes = bad_codes .. status .. " " end
end
function response(status, headers, body)
  if status == 201 then
    local id = string.match(body, '"id"%s*:%s*"(pay_[^"]+)"')
    local k = tonumber(string.match(body, '"bench_merchant"%s*:%s*"(%d+)"'))
    if id and k then tail = tail + 1; queue[tail] = {{id = id, k = k}}; matched = matched + 1 else fail(status) end
  elseif status == 200 and string.find(body, '"status"%s*:%s*"succeeded"') then
    ok = ok + 1
  else
    fail(status)
  end
end
"""


def scenarios(flow: str, server: "Server", webhooks: list[tuple[dict, str]] | None, customer: bool) -> Scenario:
    auth = {"Authorization": f"Bearer {server.api_keys[0]}", "Content-Type": "application/json"}
    if flow == "create_confirm":
        return Scenario("create_confirm", "POST", "/v1/payments", 200, auth, lua=create_confirm_lua(server.api_keys,
                                                                                                    customer))
    if flow in ("confirm_true", "confirm_true_customer"):
        rotate = ("Authorization", [f"Bearer {k}" for k in server.api_keys]) if len(server.api_keys) > 1 else None
        return Scenario(flow, "POST", "/v1/payments", 201, auth,
                        payment_body(confirm=True, customer=customer or flow == "confirm_true_customer"),
                        rotate=rotate)
    if flow in WEBHOOK_FLOWS:
        path = "/webhooks/mockstripe" + ("?apply=1" if flow == "webhooks" and not server.is_paycast else "")
        return Scenario(flow, "POST", path, 200, {"Content-Type": "application/json"},
                        per_request=webhooks, count_body='"duplicate":true')
    return Scenario("bare", "GET", server.bare_path, 200)


# --------------------------------------------------------------------------- processes


class Process:
    """A server child process that prints one JSON ``listening`` line on stdout when ready."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True).start()
        self.url = ""

    @staticmethod
    def _drain(stream, sink: list[str] | None) -> None:
        for line in stream:
            if sink is not None:
                sink.append(line)
                del sink[:-50]

    def wait_listening(self, timeout: float = 90) -> "Process":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited early:\n{''.join(self.stderr[-20:])}")
            if line.startswith("{") and '"listening"' in line:
                self.url = json.loads(line)["url"]
                threading.Thread(target=self._drain, args=(self.proc.stdout, None), daemon=True).start()
                return self
        raise RuntimeError(f"{self.name} did not start within {timeout:g} s")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclasses.dataclass
class Server:
    """What the runs need from one side: its URL, its processes, its key and its round-trip counter."""

    label: str
    process: Process
    api_keys: list[str]  # one per merchant
    bare_path: str
    round_trips: Callable[[], float | None]  # the server's counter so far; None when it has none
    is_paycast: bool
    applies_webhooks: bool = False  # an inbox processor runs (Paycast ``--role all``): its backlog drains

    @property
    def url(self) -> str:
        return self.process.url


def http_json(url: str, method: str = "GET", body: dict | None = None, token: str | None = None,
              timeout: float = 30) -> tuple[int, str]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, url, json=body, headers=headers, timeout=timeout)
    return r.status_code, r.text


def _round_trips_counter(text: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("paycast_db_round_trips_total")]
    return sum(values) if values else None


def paycast_round_trips(url: str, parent_pid: int, workers: int) -> float | None:
    """Sum of ``paycast_db_round_trips_total`` (all labels, all worker processes), or None without it.

    Counters are per process: with several workers, ``/metrics`` is scraped on fresh
    connections (which SO_REUSEPORT spreads) until every worker's ``Paycast-Pid`` answered.
    """
    import httpx
    import psutil

    if workers == 1:
        r = httpx.get(url + "/metrics", timeout=30)
        return _round_trips_counter(r.text) if r.status_code == 200 else None
    pids = {c.pid for c in psutil.Process(parent_pid).children()}
    seen: dict[int, float | None] = {}
    for _ in range(100 * len(pids)):
        r = httpx.get(url + "/metrics", timeout=30)  # httpx.get: a new connection each time
        pid = int(r.headers.get("Paycast-Pid", "0"))
        if r.status_code == 200 and pid in pids:
            seen[pid] = _round_trips_counter(r.text)
            if len(seen) == len(pids):
                break
    if len(seen) < len(pids) or any(v is None for v in seen.values()):
        return None
    return sum(seen.values())


def reference_round_trips(url: str) -> float | None:
    status, text = http_json(url + "/stats")
    return float(json.loads(text)["round_trips"]) if status == 200 else None


def start_paycast(dsn: str, workers: int, server_env: dict[str, str], merchants: int, role: str = "all") -> Server:
    admin = "adm_bench_" + secrets.token_hex(8)
    env = dict(os.environ, PAYCAST_DATABASE_URL=dsn, PAYCAST_PORT="0", PAYCAST_ADMIN_TOKEN=admin,
               PAYCAST_LOG_LEVEL="WARNING", PAYCAST_WORKERS=str(workers), **PAYCAST_ENV)
    env.update(server_env)
    env["PAYCAST_ROLE"] = role
    proc = Process(f"paycast ({workers} worker{'s' if workers > 1 else ''})",
                   [sys.executable, str(ROOT / "run.py"), "serve"], env).wait_listening()
    keys = []
    for i in range(merchants):
        status, text = http_json(proc.url + "/admin/merchants", "POST", {"name": f"bench merchant {i + 1}"}, admin)
        if status != 201:
            proc.stop()
            raise RuntimeError(f"creating a bench merchant: {status} {text[:300]}")
        keys.append(json.loads(text)["api_key"])
    url, pid = proc.url, proc.proc.pid
    counter = lambda: paycast_round_trips(url, pid, workers)  # noqa: E731
    label = (f"Paycast ×{workers}" if workers > 1 else "Paycast") + (f" --role {role}" if role != "all" else "")
    return Server(label, proc, keys, "/healthz", counter, True, applies_webhooks=role == "all")


def start_reference(dsn: str, merchants: int) -> Server:
    keys = ["sk_ref_" + secrets.token_hex(12) for _ in range(merchants)]
    argv = [sys.executable, "-m", "bench.reference", "--dsn", dsn, "--webhook-secret", WEBHOOK_SECRET]
    for key in keys:
        argv += ["--api-key", key]
    proc = Process("reference", argv, dict(os.environ)).wait_listening()
    url = proc.url
    return Server("reference", proc, keys, "/ping", lambda: reference_round_trips(url), False)


# --------------------------------------------------------------------------- measuring


class Bench:
    """The database, the servers and the runs; :meth:`close` stops everything (also on Ctrl-C / SIGTERM)."""

    def __init__(self, args) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="paycast-bench-", dir="/tmp")
        self.workdir = pathlib.Path(self.tmp) / "wrk"
        self.workdir.mkdir()
        self.pg = None
        self.servers: list[Server] = []
        self.wrk: subprocess.Popen | None = None
        self.pg_cpu: CpuMeter | None = None
        self.run_tag = uuid.uuid4().hex[:6]
        self.pools = 0  # webhook pools signed so far: each gets its own event ids

    def start_database(self) -> tuple[str, str, str]:
        """The embedded PostgreSQL; the DSNs of Paycast's, the reference's and ``--role api`` Paycast's databases."""
        self.pg = embedded_postgres(pathlib.Path(self.tmp) / "db", "paycast_bench", "reference", "paycast_api")
        self.pg_cpu = CpuMeter([postmaster_pid(self.pg)], include_children=True)
        print(f"embedded PostgreSQL in {self.tmp}/db", flush=True)
        return self.pg.dsn("paycast_bench"), self.pg.dsn("reference"), self.pg.dsn("paycast_api")

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        print(f"{server.label}: {server.url} (pid {server.process.proc.pid})", flush=True)
        return server

    def remove(self, server: Server) -> None:
        server.process.stop()
        self.servers.remove(server)

    def _register(self, proc) -> None:
        self.wrk = proc

    def _wrk(self, server: Server, scenario: Scenario, seconds: float) -> dict:
        return run_wrk(server.url, scenario, self.args.connections, seconds, self.workdir, self._register)

    def measure(self, server: Server, flow: str, webhooks=None, warmup_webhooks=None) -> dict:
        """Warm-up, then one measured wrk run with CPU and round-trip accounting."""
        if self.args.warmup > 0:
            self._wrk(server, scenarios(flow, server, warmup_webhooks or webhooks, self.args.customer_id),
                      self.args.warmup)
            if flow in WEBHOOK_FLOWS:
                self.wait_for_drain(server)
        scenario = scenarios(flow, server, webhooks, self.args.customer_id)
        spy = self.profile(server, flow) if self.args.py_spy and server.is_paycast else None
        server_cpu = CpuMeter([server.process.proc.pid], include_children=True)
        trips_before = server.round_trips()
        server_cpu.start()
        self.pg_cpu.start()
        r = self._wrk(server, scenario, self.args.duration)
        # What the run stored and the processor has not applied yet is billed to this run.
        r["drain_s"] = self.wait_for_drain(server) if flow in WEBHOOK_FLOWS else 0.0
        server_s, pg_s = server_cpu.stop(), self.pg_cpu.stop()
        trips_after = server.round_trips()
        if spy is not None:
            spy.wait()
        units = r["ok"]
        r["units_per_s"] = units / r["duration_s"]
        r["server_cpu_us"] = server_s / max(1, units) * 1e6
        r["pg_cpu_us"] = pg_s / max(1, units) * 1e6
        r["server_cores"] = server_s / r["duration_s"]
        r["round_trips"] = ((trips_after - trips_before) / max(1, units)
                            if trips_before is not None and trips_after is not None else None)
        r["errors"] = r["bad"] + r["socket_errors"]
        trips = f"{r['round_trips']:.1f}" if r["round_trips"] is not None else "n/a"
        drain = f"  (drained {r['drain_s']:.1f} s after)" if r["drain_s"] else ""
        print(f"  {flow:21} {server.label:10} {r['units_per_s']:8,.0f} {UNITS[flow]}/s  "
              f"p50 {fmt_ms(r['p50_ms'])} p99 {fmt_ms(r['p99_ms'])} ms  server {r['server_cpu_us']:,.0f} µs/unit "
              f"({r['server_cores']:.2f} cores)  PG {r['pg_cpu_us']:,.0f} µs/unit  round trips {trips}  "
              f"errors {r['errors']} {r['bad_codes'] or ''}{drain}", flush=True)
        return r

    def profile(self, server: Server, flow: str) -> subprocess.Popen:
        """py-spy (raw collapsed stacks, per thread, GIL holders only with --gil) of the Paycast process(es)."""
        out = pathlib.Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{flow}-{server.label.replace(' ', '').replace('×', 'x')}.txt"
        spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
        return subprocess.Popen([spy, "record", "--pid", str(server.process.proc.pid), "--subprocesses",
                                 "--duration", str(max(1, round(self.args.duration))), "--rate", "100",
                                 "--threads", "--format", "raw", "-o", str(target)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for_drain(self, server: Server) -> float:
        """Until Paycast's inbox processor has nothing left (the reference applies in the request).

        Returns:
          The seconds waited (0 for a server without a processor).
        """
        if not server.applies_webhooks:
            return 0.0
        import asyncio

        import asyncpg

        async def poll() -> None:
            conn = await asyncpg.connect(self.pg.dsn("paycast_bench"))
            try:
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while time.monotonic() < deadline:
                    if not await conn.fetchval("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL"):
                        return
                    await asyncio.sleep(0.2)
                print(f"  (inbox not drained after {DRAIN_TIMEOUT_S} s; going on)", flush=True)
            finally:
                await conn.close()

        started = time.monotonic()
        asyncio.run(poll())
        return time.monotonic() - started

    def webhook_pool(self, server: Server, flow: str) -> list[tuple[dict, str]]:
        """Signed webhooks for one run (signed now: the tolerance is 300 s), enough not to wrap around."""
        from bench.bench_webhooks import create_pending_payments, webhook_requests

        if flow == "webhooks":  # both sides apply: real processing payments to move
            payments = create_pending_payments(server.url, server.api_keys[0], PENDING_PAYMENTS)
        else:  # stored only: any payment id will do
            payments = [(f"pay_stored_{i}", f"pi_stored_{i}") for i in range(PENDING_PAYMENTS)]
        n = int(6000 * max(self.args.duration, self.args.warmup)) + 1000
        self.pools += 1
        return webhook_requests(payments, n, f"{self.run_tag}p{self.pools}", WEBHOOK_SECRET)

    def close(self) -> None:
        stop_everything(self.wrk, [server.process for server in self.servers], self.pg, [self.tmp])


def run_flows(bench: Bench, paycast: Server, reference: Server, flows: list[str], rounds: int) -> dict:
    """Each flow, ``rounds`` times, Paycast then the reference: {flow: {"paycast": [...], "reference": [...]}}."""
    results: dict = {}
    for flow in flows:
        results[flow] = {"paycast": [], "reference": []}
        for i in range(rounds):
            for side, server in (("paycast", paycast), ("reference", reference)):
                hooks = warm = None
                if flow in WEBHOOK_FLOWS:
                    warm, hooks = bench.webhook_pool(server, flow), bench.webhook_pool(server, flow)
                results[flow][side].append(bench.measure(server, flow, hooks, warm))
    return results


# --------------------------------------------------------------------------- report


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (of 1, 2 or 3 rounds: the middle or the lower)."""
    ordered = sorted(runs, key=lambda r: r["units_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def per_cpu(run: dict) -> float:
    """Units per CPU-second of server + PostgreSQL: a capacity estimate that busy neighbours disturb less."""
    spent = run["server_cpu_us"] + run["pg_cpu_us"]
    return 1e6 / spent if spent else 0.0


def render(results: dict, paycast_label: str) -> str:
    out = [f"| flow | {paycast_label} /s | reference /s | ratio (goal) | p50 / p99 ms {paycast_label} "
           f"| p50 / p99 ms ref | p99 ratio | server CPU µs/unit P / R | PG CPU µs/unit P / R "
           f"| units per CPU-s (server + PG) P / R (ratio) | round trips/unit P / R | errors P / R |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for flow, sides in results.items():
        p, r = median_run(sides["paycast"]), median_run(sides["reference"])
        ratio = p["units_per_s"] / r["units_per_s"] if r["units_per_s"] else 0.0
        goal = f" (≥ {GOALS[flow]})" if flow in GOALS else ""
        p99 = p["p99_ms"] / r["p99_ms"] if r["p99_ms"] else 0.0
        trips = lambda x: f"{x['round_trips']:.1f}" if x["round_trips"] is not None else "n/a"  # noqa: E731
        out.append(
            f"| {LABELS[flow]} ({UNITS[flow]}) | {p['units_per_s']:,.0f} | {r['units_per_s']:,.0f} "
            f"| **{ratio:.2f}**{goal} | {fmt_ms(p['p50_ms'])} / {fmt_ms(p['p99_ms'])} "
            f"| {fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | {p99:.1f} (≤ 2) "
            f"| {p['server_cpu_us']:,.0f} / {r['server_cpu_us']:,.0f} | {p['pg_cpu_us']:,.0f} / {r['pg_cpu_us']:,.0f} "
            f"| {per_cpu(p):,.0f} / {per_cpu(r):,.0f} ({per_cpu(p) / per_cpu(r) if per_cpu(r) else 0:.2f}) "
            f"| {trips(p)} / {trips(r)} | {p['errors']} / {r['errors']} |")
    return "\n".join(out)


def render_scaling(by_workers: dict[int, dict]) -> str:
    counts = sorted(by_workers)
    out = ["| flow | " + " | ".join(f"Paycast ×{w} /s" for w in counts) + " | "
           + " | ".join(f"×{w} ÷ ×{counts[0]}" for w in counts[1:]) + " | server CPU µs/unit "
           + " / ".join(f"×{w}" for w in counts) + " |",
           "|---|" + "---:|" * (2 * len(counts) - 1) + "---:|"]
    for flow in by_workers[counts[0]]:
        rates = [median_run(by_workers[w][flow]["paycast"])["units_per_s"] for w in counts]
        cpus = [median_run(by_workers[w][flow]["paycast"])["server_cpu_us"] for w in counts]
        out.append(f"| {LABELS[flow]} | " + " | ".join(f"{x:,.0f}" for x in rates) + " | "
                   + " | ".join(f"{x / rates[0]:.2f}" if rates[0] else "n/a" for x in rates[1:]) + " | "
                   + " / ".join(f"{c:,.0f}" for c in cpus) + " |")
    return "\n".join(out)


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def save(args, tables: list[str]) -> None:
    text = [
        f"- command: `{command_line('bench_compare.py', '  (what `make bench` runs)')}`",
        f"- code: {git_revision()}",
        f"- machine: {machine_line()}; "
        f"**shared with other sessions** (load average at the end: {load_average()}): numbers are indicative, "
        "compare the ratios within this run",
        f"- generator: {generator_description()}, {args.connections} connections, {args.duration:g} s per cell "
        f"after {args.warmup:g} s warm-up, {args.rounds} round(s) interleaved (median shown)",
        "- one embedded PostgreSQL (fresh temp dir), databases `paycast_bench` and `reference`; Paycast with "
        + " ".join(f"{k}={v}" for k, v in PAYCAST_ENV.items()) + (f" {' '.join(args.server_env)}" if args.server_env
                                                                   else ""),
        "- p50/p99 are per HTTP request (the create → confirm flow is two requests per payment); CPU per unit "
        "is process CPU (psutil) ÷ units; units per CPU-s = 1 s ÷ (server + PostgreSQL CPU per unit), the "
        "comparison that depends least on the neighbours' load; round trips from `paycast_db_round_trips_total` summed over the workers (n/a: counter "
        "absent) and the reference's own counter (statements + BEGIN/COMMIT + pool reset)",
    ]
    if args.merchants > 1 or args.customer_id:
        text.append(f"- payments over {args.merchants} merchant(s), round robin"
                    + ("; every payment has a `customer_id`" if args.customer_id else "; no `customer_id`"))
    if args.py_spy:
        text.append("- py-spy was attached to Paycast during the measured runs (profiler overhead included)")
    if args.note:
        text.append(f"- note: {args.note}")
    write_results(f"Paycast vs reference — {utc_now()}", text, tables)


def _measure(bench: "Bench", args, server_env: dict[str, str]) -> None:
    """The reference and Paycast at each ``--workers`` count, every flow; the tables printed and saved."""
    paycast_dsn, reference_dsn, api_dsn = bench.start_database()
    reference = bench.add(start_reference(reference_dsn, args.merchants))
    # webhooks_api runs on a `--role api` process of its own, started when the others are done.
    by_role = {"all": (paycast_dsn, [f for f in args.flows if f != "webhooks_api"]),
               "api": (api_dsn, [f for f in args.flows if f == "webhooks_api"])}
    tables, by_workers = [], {}
    for workers in args.workers:
        results: dict = {}
        for role, (dsn, flows) in by_role.items():
            if flows:
                paycast = bench.add(start_paycast(dsn, workers, server_env, args.merchants, role))
                results.update(run_flows(bench, paycast, reference, flows, args.rounds))
                bench.remove(paycast)
        by_workers[workers] = results = {flow: results[flow] for flow in args.flows}
        label = f"Paycast ×{workers}" if workers > 1 else "Paycast"
        tables.append(f"Paycast `run.py serve --workers {workers}` against the reference:\n\n"
                      + render(results, label))
    if len(by_workers) > 1:
        tables.append("Paycast scaling with processes on one port (SO_REUSEPORT), same run:\n\n"
                      + render_scaling(by_workers))
    print()
    print("\n\n".join(tables))
    if not args.no_save:
        save(args, tables)
        print(f"\nappended to {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per cell (10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of unmeasured load before each "
                        "cell (default: 2, or 1 when --duration < 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="Paycast process counts to measure, e.g. 1 2 (run.py serve --workers N)")
    parser.add_argument("--flows", nargs="+", choices=FLOWS + EXTRA_FLOWS, default=list(FLOWS),
                        help=f"flows to run (default: {' '.join(FLOWS)})")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per flow; the median is shown")
    parser.add_argument("--merchants", type=int, default=1,
                        help="spread the payments round robin over this many merchants on both servers (1); "
                             "per-merchant event seq contention shows as a difference between 1 and 8")
    parser.add_argument("--customer-id", action="store_true",
                        help="payments carry a customer_id (Paycast then notifies realtime receivers)")
    add_save_arguments(parser, server_env_help="extra setting for the Paycast processes (repeatable)",
                       py_spy_help="record a py-spy profile of Paycast during each measured run into DIR (the "
                                   "profiler costs CPU: that run's numbers are not comparable)")
    args = parser.parse_args(argv)
    if args.merchants < 1:
        parser.error("--merchants must be at least 1")
    if args.warmup is None:
        args.warmup = 2.0 if args.duration >= 10 else 1.0
    resolve_generator(parser)
    server_env = parse_server_env(parser, args.server_env)

    bench = Bench(args)
    try:
        with cleanup_on_exit(bench.close):
            _measure(bench, args, server_env)
    except KeyboardInterrupt:
        return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
