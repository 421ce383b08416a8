"""``run.py simulate --chaos --seed N``: mixed traffic under injected faults, then every invariant.

It starts its own Paycast (``run.py serve``) on an embedded PostgreSQL in a
throwaway data directory, and drives payments (cards, declines, manual
captures, UPI), refunds, deposits, withdrawals, disputes (with evidence) and a
few realtime WebSocket clients, while injecting:

* duplicate and reordered gateway webhooks (sent by this driver, signed, on
  top of the simulator's own duplicates and reordering);
* lost webhooks (``pending@upi`` payments, ``…77`` refunds and withdrawals:
  only reconciliation can settle them);
* connector timeouts and 500s (routing through the ``flaky`` connector);
* one ``kill -9`` of the server (a new one is started on the same port and data);
* one PostgreSQL crash (``kill -9`` of the postmaster; the server's supervisor
  restarts it).

Then it waits (bounded) for everything to settle, runs ``run.py check`` beside
the live server (every invariant of DESIGN.md), and prints a table. The exit
status is 0 only if there are no violations, nothing is left pending without a
review flag, and no realtime client saw a gap.

Which operation runs, which fault it gets, and when the kill and the
PostgreSQL crash happen are a pure function of the seed (:func:`make_schedule`;
``--print-schedule`` shows it and its fingerprint). Timing inside the server
(thread interleavings, the ``flaky`` connector's own draws) is not.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

import httpx
import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "adm_chaos"
CUSTOMERS = [f"cus_chaos_{i}" for i in range(4)]
STRIPE_SECRET = "whsec_dev_mockstripe"

# Operation kinds and their weights in the mix.
MIX = {
    "card_ok": 20, "card_declined": 5, "card_dispute": 4, "manual_capture": 5, "manual_cancel": 3,
    "upi_sim": 8, "upi_lost": 3, "upi_driver_webhook": 8, "flaky_card": 12,
    "refund": 10, "refund_lost": 3, "deposit": 8, "withdrawal": 6, "withdrawal_lost": 3,
}
# Faults that only apply to some kinds (drawn per operation from the seed).
WEBHOOK_FAULTS = {"duplicate_webhook": 0.5, "reordered_webhook": 0.35}
LOST = {"upi_lost": "lost_payment_webhook", "refund_lost": "lost_refund_webhook",
        "withdrawal_lost": "lost_payout_webhook"}
SERVER_ENV = {
    "PAYCAST_FLAKY_ERROR_RATE": "0.4", "PAYCAST_PROCESSING_DEADLINE_S": "1", "PAYCAST_RECONCILE_INTERVAL_S": "0.2",
    "PAYCAST_RECONCILE_MAX_CHECKS": "4", "PAYCAST_SIM_DUPLICATE_RATE": "0.1", "PAYCAST_SIM_REORDER": "true",
    "PAYCAST_SIM_DELAY_MS": "20", "PAYCAST_INBOX_RETRY_SCHEDULE": "1,1,2", "PAYCAST_LOG_LEVEL": "WARNING",
    "PAYCAST_DB_CONNECT_TIMEOUT_S": "1", "PAYCAST_BREAKER_FAILURE_THRESHOLD": "1.0",
}


@dataclass(frozen=True)
class Op:
    index: int
    kind: str
    amount: int
    customer: str
    faults: tuple[str, ...] = ()
    choice: float = 0.0  # a seeded draw the operation may use (capture share, evidence, ...)


@dataclass(frozen=True)
class Schedule:
    seed: int
    ops: tuple[Op, ...]
    kill_server_at: int
    crash_postgres_at: int

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def make_schedule(seed: int, operations: int) -> Schedule:
    """The whole fault schedule for ``seed``: a pure function (same seed, same schedule).

    Args:
      operations: how many operations (at least 8).
    """
    operations = max(8, operations)
    rng = random.Random(seed)
    kinds = list(MIX)
    ops = []
    for i in range(operations):
        kind = rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
        amount = rng.randrange(2, 90) * 100 + rng.choice([0, 10, 50])
        if kind in LOST:
            amount = amount // 100 * 100 + 77
        faults = [LOST[kind]] if kind in LOST else []
        if kind == "upi_driver_webhook":
            faults += [f for f, p in WEBHOOK_FAULTS.items() if rng.random() < p]
        if kind == "flaky_card":
            faults.append("flaky_connector")
        ops.append(Op(i, kind, amount, rng.choice(CUSTOMERS), tuple(faults), round(rng.random(), 6)))
    kill = rng.randrange(operations // 4, operations // 2)
    crash = rng.randrange(operations // 2 + 1, 3 * operations // 4 + 1)
    return Schedule(seed, tuple(ops), kill, crash)


# ---------------------------------------------------------------------------- the server under test


class Server:
    """``run.py serve`` on the shared data dir and a fixed port (so clients find it after a restart)."""

    def __init__(self, data_dir: pathlib.Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCAST_")}
        env.update(SERVER_ENV, PAYCAST_DATA_DIR=str(self.data_dir), PAYCAST_PORT=str(self.port),
                   PAYCAST_ADMIN_TOKEN=ADMIN_TOKEN)
        return env

    def start(self, timeout: float = 90) -> None:
        self.starts += 1
        log = open(self.data_dir / f"server-{self.starts}.log", "w")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve"], cwd=ROOT, env=self.env(),
                                     stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the server exited during start-up")
            if '"listening"' in line:
                threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
                return
        raise RuntimeError("the server did not start in time")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def crash_postgres(self) -> int:
        """SIGKILL the postmaster; returns its pid."""
        pid = int((self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        return pid

    def one_shot(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the driver


@dataclass
class Tally:
    operations: collections.Counter = field(default_factory=collections.Counter)
    faults: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    payments: list[str] = field(default_factory=list)
    realtime_frames: int = 0
    realtime_gaps: int = 0
    realtime_reconnects: int = 0


class Chaos:
    def __init__(self, schedule: Schedule, server: Server, concurrency: int) -> None:
        self.schedule = schedule
        self.server = server
        self.concurrency = concurrency
        self.tally = Tally()
        self.api_key = ""
        self.accounts: dict[str, str] = {}
        self.restarting = trio.Event()
        self.restarting.set()  # set = the server is up

    async def request(self, client: httpx.AsyncClient, method: str, path: str, body=None, **kw) -> dict | None:
        """One call; transport errors and 5xx are counted (the server may be down on purpose)."""
        for _ in range(3):
            await self.restarting.wait()
            try:
                r = await client.request(method, path, json=body, **kw)
            except httpx.HTTPError as exc:
                self.tally.errors[type(exc).__name__] += 1
                await trio.sleep(0.3)
                continue
            if r.status_code >= 500:
                self.tally.errors[f"{r.status_code} {r.json().get('error', {}).get('code', '')}"] += 1
                await trio.sleep(0.3)
                continue
            if r.status_code >= 400:
                self.tally.errors[f"{r.status_code} {r.json().get('error', {}).get('code', '')}"] += 1
            return r.json()
        return None

    async def setup(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/admin/merchants", json={"name": "chaos"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        r.raise_for_status()
        self.api_key = r.json()["api_key"]
        client.headers["Authorization"] = f"Bearer {self.api_key}"
        await client.put("/v1/routing", json={"strategy": "priority", "connectors": ["mockstripe", "mockrazorpay"]})
        for customer in CUSTOMERS:
            account = (await client.post("/v1/accounts", json={"customer_id": customer, "currency": "INR"})).json()
            self.accounts[customer] = account["id"]
            await client.post(f"/v1/accounts/{account['id']}/deposits",
                              json={"amount": 200_000, "payment_method": _card("4242424242424242")})

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=15) as client:
            await self.setup(client)
            async with trio.open_nursery() as realtime:
                for customer in CUSTOMERS[:3]:
                    realtime.start_soon(self.realtime_client, client, customer, name=f"chaos:realtime:{customer}")
                limiter = trio.Semaphore(self.concurrency)
                async with trio.open_nursery() as nursery:
                    for op in self.schedule.ops:
                        if op.index == self.schedule.kill_server_at:
                            await self.kill_server()
                        if op.index == self.schedule.crash_postgres_at:
                            pid = await trio.to_thread.run_sync(self.server.crash_postgres)
                            self.tally.faults["postgres_kill9"] += 1
                            print(f"  op {op.index}: kill -9 of the postmaster (pid {pid})", flush=True)
                        await limiter.acquire()
                        nursery.start_soon(self.guarded, client, op, limiter, name=f"chaos:op:{op.index}")
                await self.settle(client)
                await trio.sleep(2)  # let the realtime clients read the last events
                realtime.cancel_scope.cancel()

    async def kill_server(self) -> None:
        self.restarting = trio.Event()
        await trio.sleep(0.3)  # in-flight requests meet the kill
        self.server.kill9()
        self.tally.faults["server_kill9"] += 1
        print("  kill -9 of the server; starting a new one", flush=True)
        await trio.to_thread.run_sync(self.server.start)
        self.restarting.set()

    async def guarded(self, client, op: Op, limiter: trio.Semaphore) -> None:
        try:
            self.tally.operations[op.kind] += 1
            for fault in op.faults:
                self.tally.faults[fault] += 1
            await self.one(client, op)
        except (httpx.HTTPError, KeyError, TypeError) as exc:
            self.tally.errors[f"op {type(exc).__name__}"] += 1
        finally:
            limiter.release()

    async def one(self, client, op: Op) -> None:
        kind = op.kind
        base = {"amount": op.amount, "currency": "INR", "customer_id": op.customer, "confirm": True}
        if kind in ("card_ok", "card_declined", "card_dispute", "flaky_card"):
            number = {"card_declined": "4000000000000002", "card_dispute": "4000000000000259"}.get(
                kind, "4242424242424242")
            body = {**base, "payment_method": _card(number)}
            if kind == "flaky_card":
                body["connector"] = "flaky"
            payment = await self.request(client, "POST", "/v1/payments", body)
            if payment and "id" in payment:
                self.tally.payments.append(payment["id"])
                for attempt in payment.get("attempts") or []:
                    if attempt.get("error_code") in ("connector_timeout", "connector_server_error"):
                        self.tally.faults[attempt["error_code"].replace("server_error", "500")] += 1
                if kind == "card_dispute":
                    await self.answer_dispute(client, payment["id"], op)
        elif kind in ("manual_capture", "manual_cancel"):
            payment = await self.request(client, "POST", "/v1/payments", {
                **base, "capture_method": "manual", "payment_method": _card("4242424242424242")})
            if payment and payment.get("status") == "requires_capture":
                if kind == "manual_capture":
                    await self.request(client, "POST", f"/v1/payments/{payment['id']}/capture",
                                       {"amount": max(1, int(op.amount * (0.5 + op.choice / 2)))})
                else:
                    await self.request(client, "POST", f"/v1/payments/{payment['id']}/cancel", {})
        elif kind in ("upi_sim", "upi_lost", "upi_driver_webhook"):
            vpa = {"upi_sim": "success@upi" if op.choice < 0.7 else "failure@upi"}.get(kind, "pending@upi")
            payment = await self.request(client, "POST", "/v1/payments", {
                **base, "connector": "mockstripe", "payment_method": {"type": "upi", "upi": {"vpa": vpa}}})
            if payment and "id" in payment and kind == "upi_driver_webhook":
                await self.gateway_webhooks(client, payment, op)
        elif kind in ("refund", "refund_lost"):
            payment = await self.request(client, "POST", "/v1/payments", {
                **base, "amount": op.amount * 2, "payment_method": _card("4242424242424242")})
            if payment and payment.get("status") == "succeeded":
                await self.request(client, "POST", "/v1/refunds", {"payment_id": payment["id"], "amount": op.amount})
        elif kind == "deposit":
            await self.request(client, "POST", f"/v1/accounts/{self.accounts[op.customer]}/deposits",
                               {"amount": op.amount, "payment_method": _card("4242424242424242")})
        elif kind in ("withdrawal", "withdrawal_lost"):
            await self.request(client, "POST", f"/v1/accounts/{self.accounts[op.customer]}/withdrawals",
                               {"amount": op.amount})

    async def gateway_webhooks(self, client, payment: dict, op: Op) -> None:
        """The gateway's own webhook for a pending UPI payment, with the op's faults."""
        txn = (payment.get("attempts") or [{}])[-1].get("connector_txn_id")
        if not txn:
            return
        now = int(time.time())

        def event(kind: str, created: int) -> bytes:
            return json.dumps({"id": f"evt_chaos_{op.index}_{kind}", "type": kind, "created": created,
                               "data": {"object": {"id": txn, "amount": payment["amount"], "currency": "inr",
                                                   "status": "x", "metadata": {"payment_id": payment["id"]}}}}).encode()

        success = event("payment_intent.succeeded", now)
        sends = [success]
        if "duplicate_webhook" in op.faults:
            sends += [success, success]
        if "reordered_webhook" in op.faults:
            sends.append(event("payment_intent.payment_failed", now - 30))  # an older event arriving last
        for body in sends:
            from domain.signatures import stripe_header

            headers = {"Stripe-Signature": stripe_header(STRIPE_SECRET, body, int(time.time())),
                       "Content-Type": "application/json"}
            await self.request(client, "POST", "/webhooks/mockstripe", content=body, headers=headers)

    async def answer_dispute(self, client, payment_id: str, op: Op) -> None:
        for _ in range(30):
            page = await self.request(client, "GET", "/v1/disputes", params={"payment_id": payment_id})
            if page and page.get("data"):
                text = "winning_evidence attached" if op.choice < 0.5 else "losing_evidence attached"
                await self.request(client, "POST", f"/v1/disputes/{page['data'][0]['id']}/evidence", {"text": text})
                return
            await trio.sleep(0.2)

    async def realtime_client(self, client, customer: str) -> None:
        """A WebSocket client that reconnects with ``after_seq`` and checks its seq has no gap."""
        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        last = 0
        while True:
            await self.restarting.wait()
            try:
                tok = await client.post("/v1/realtime/tokens", json={"client_id": customer, "ttl_s": 3600})
                if tok.status_code != 201:
                    await trio.sleep(0.5)
                    continue
                query = urllib.parse.urlencode({"token": tok.json()["token"], "after_seq": last})
                url = self.server.url.replace("http://", "ws://") + "/v1/realtime?" + query
                async with open_websocket_url(url) as ws:
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame["type"] == "ping":
                            await ws.send_message('{"type": "pong"}')
                        elif frame["type"] == "event":
                            self.tally.realtime_frames += 1
                            if frame["seq"] != last + 1:
                                self.tally.realtime_gaps += 1
                            last = max(last, frame["seq"])
                            await ws.send_message(json.dumps({"type": "ack", "seq": last}))
            except (ConnectionClosed, HandshakeError, OSError, httpx.HTTPError, trio.BrokenResourceError):
                self.tally.realtime_reconnects += 1
                await trio.sleep(0.3)

    async def settle(self, client, timeout: float = 90) -> None:
        """Wait until nothing is left pending without a review flag (bounded)."""
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            if await trio.to_thread.run_sync(lambda: pending_without_review(self.server.data_dir)) == 0:
                return
            await trio.sleep(1)


def _card(number: str) -> dict:
    return {"type": "card", "card": {"number": number}}


def _db_query(data_dir: pathlib.Path, sql: str) -> list:
    import asyncio

    import asyncpg

    from storage.embedded import EmbeddedPostgres

    async def main():
        conn = await asyncpg.connect(EmbeddedPostgres(data_dir).dsn("paycast"))
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(main())


PENDING_WITHOUT_REVIEW = """
SELECT (SELECT count(*) FROM payments WHERE status = 'processing' AND NOT review_required)
     + (SELECT count(*) FROM refunds WHERE status = 'pending' AND NOT review_required)
     + (SELECT count(*) FROM account_transactions WHERE status = 'pending' AND NOT review_required)
     + (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL) AS n
"""


def pending_without_review(data_dir: pathlib.Path) -> int:
    try:
        return int(_db_query(data_dir, PENDING_WITHOUT_REVIEW)[0]["n"])
    except Exception:  # noqa: BLE001 - the database may be restarting: not settled yet
        return -1


def run_chaos(seed: int, operations: int, concurrency: int, keep: bool) -> int:
    schedule = make_schedule(seed, operations)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="pcchaos", dir="/tmp"))
    server = Server(data_dir, _free_port())
    print(f"chaos seed {seed}: {len(schedule.ops)} operations, schedule {schedule.fingerprint()}, "
          f"server kill at op {schedule.kill_server_at}, PostgreSQL kill at op {schedule.crash_postgres_at}",
          flush=True)
    started = time.monotonic()
    try:
        server.start()
        chaos = Chaos(schedule, server, concurrency)
        trio.run(chaos.run)
        left = pending_without_review(data_dir)
        check = server.one_shot("check")  # beside the live server: it keeps running
        violations = sum(int(line.split("(")[1].split()[0]) for line in check.stdout.splitlines()
                         if line.startswith("FAIL") and "(" in line)
        if check.returncode not in (0, 1):
            print(check.stdout + check.stderr, file=sys.stderr)
            violations = max(violations, 1)
        server.stop()
    finally:
        server.stop()
        if not keep:
            from storage.embedded import EmbeddedPostgres

            EmbeddedPostgres(data_dir).stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    tally = chaos.tally
    rows: list[tuple[str, object]] = [("seed", seed), ("schedule fingerprint", schedule.fingerprint()),
                                      ("elapsed (s)", f"{time.monotonic() - started:.1f}"),
                                      ("operations", sum(tally.operations.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(tally.operations.items())]
    rows += [("faults injected", sum(tally.faults.values()))] + [(f"  {k}", v) for k, v in sorted(tally.faults.items())]
    rows += [("client-visible errors (expected under faults)", sum(tally.errors.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(tally.errors.items())]
    rows += [("realtime frames / reconnects", f"{tally.realtime_frames} / {tally.realtime_reconnects}"),
             ("realtime seq gaps", tally.realtime_gaps),
             ("invariant violations (run.py check)", violations),
             ("pending without review flag", left),
             ("500 responses (bugs: faults must give 503)", sum(v for k, v in tally.errors.items()
                                                                if k.startswith("500")))]
    width = max(len(k) for k, _ in rows) + 2
    print("\n" + "\n".join(f"{k:<{width}}{v}" for k, v in rows))
    if violations:
        print(check.stdout)
    server_errors = sum(v for k, v in tally.errors.items() if k.startswith("500"))
    rows_ok = violations == 0 and left == 0 and tally.realtime_gaps == 0
    ok = rows_ok and server_errors == 0
    print("\nchaos: OK" if ok else "\nchaos: FAILED")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py simulate --chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chaos", action="store_true", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--operations", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--print-schedule", action="store_true", help="print the seed's fault schedule and exit")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (and its PostgreSQL)")
    args = parser.parse_args(argv)
    if args.print_schedule:
        schedule = make_schedule(args.seed, args.operations)
        print(json.dumps({"fingerprint": schedule.fingerprint(), **asdict(schedule)}))
        return 0
    return run_chaos(args.seed, args.operations, args.concurrency, args.keep)
