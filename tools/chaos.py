"""``run.py simulate --chaos --seed N [--topology single|workers:N|roles]``: mixed traffic under injected faults, then every invariant.

It starts its own Paycast on an embedded PostgreSQL in a throwaway data
directory, in one of three topologies (tools/chaos_cluster.py): ``single``
(one ``run.py serve``, the default), ``workers:N`` (``run.py serve --workers
N`` on one port) or ``roles`` (an ``api``, a ``worker`` and two ``realtime``
processes on one data directory). It drives payments (cards, declines, manual
captures, UPI), refunds, deposits, withdrawals, disputes (with evidence),
outgoing webhooks to a local receiver and a few realtime WebSocket clients
(spread over the realtime processes), while injecting:

* duplicate and reordered gateway webhooks (sent by this driver, signed, on
  top of the simulator's own duplicates and reordering);
* lost webhooks (``pending@upi`` payments, ``…77`` refunds and withdrawals:
  only reconciliation can settle them);
* connector timeouts and 500s (routing through the ``flaky`` connector);
* one ``kill -9`` of the server (``roles``: of the api process; ``workers:N``:
  of the parent and its children), started again on the same port and data;
* one PostgreSQL crash (``kill -9`` of the postmaster; the servers'
  supervisors restart it, under every process of the topology);
* ``workers:N``: ``kill -9`` of one worker child (the parent restarts it) and
  ``SIGSTOP`` of one child for longer than an inbox lease, then ``SIGCONT``;
* ``roles``: ``kill -9`` of the worker process while it holds inbox and
  delivery leases (started again after a seeded delay), of one realtime
  process with clients connected (they reconnect to the other with
  ``after_seq``), and ``SIGSTOP`` of the worker for longer than an inbox lease
  while a stand-in worker takes its leases over, then ``SIGCONT`` (its late
  applies must be refused).

Then it waits (bounded) for everything to settle, runs ``run.py check`` beside
the live processes (every invariant of docs/architecture.md), and prints a table. The
exit status is 0 only if there are no violations, nothing is left pending
without a review flag, no realtime client saw a gap or a duplicate, and no
request got a 500.

Which operation runs, which fault it gets, and when and where each process
fault happens are a pure function of the seed and the topology
(:func:`make_schedule`; ``--print-schedule`` shows it and its fingerprint).
Timing inside the servers (thread interleavings, the ``flaky`` connector's own
draws) is not.

Operation kinds are "legs" (:data:`LEGS`): a weight in the mix and the method
that drives one; a new leg (e.g. a real gateway's) is an entry and a method.
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
import sys
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

import httpx
import trio

from tools import chaos_cluster as cluster_mod
from tools.chaos_cluster import ADMIN_TOKEN, Cluster, Receiver, Topology, TopologyError
from tools.chaos_leases import Watch, query

CUSTOMERS = [f"cus_chaos_{i}" for i in range(4)]
STRIPE_SECRET = "whsec_dev_mockstripe"
# The inbox's lease (actors/inbox.py LEASE_S): a process stopped for longer loses its claims.
INBOX_LEASE_S = 10.0


@dataclass(frozen=True)
class Leg:
    """One kind of operation in the mix.

    Attributes:
      weight: its share of the mix.
      drive: the :class:`Chaos` method that drives one operation of it.
      fault: a fault every operation of it carries (a lost webhook, a flaky connector).
      webhook_faults: the driver sends the gateway's webhooks itself, duplicated or reordered (drawn).
    """

    weight: int
    drive: str
    fault: str | None = None
    webhook_faults: bool = False

    @property
    def lost(self) -> bool:
        return self.fault is not None and self.fault.startswith("lost_")


LEGS: dict[str, Leg] = {
    "card_ok": Leg(20, "card"), "card_declined": Leg(5, "card"), "card_dispute": Leg(4, "card"),
    "manual_capture": Leg(5, "manual"), "manual_cancel": Leg(3, "manual"),
    "upi_sim": Leg(8, "upi"), "upi_lost": Leg(3, "upi", "lost_payment_webhook"),
    "upi_driver_webhook": Leg(8, "upi", webhook_faults=True), "flaky_card": Leg(12, "card", "flaky_connector"),
    "refund": Leg(10, "refund"), "refund_lost": Leg(3, "refund", "lost_refund_webhook"),
    "deposit": Leg(8, "deposit"), "withdrawal": Leg(6, "withdrawal"),
    "withdrawal_lost": Leg(3, "withdrawal", "lost_payout_webhook"),
}
# Drawn per operation of a leg with ``webhook_faults``.
WEBHOOK_FAULTS = {"duplicate_webhook": 0.5, "reordered_webhook": 0.35}
# The events the run's outgoing-webhook endpoint subscribes to.
ENDPOINT_EVENTS = ["*"]


@dataclass(frozen=True)
class Op:
    index: int
    kind: str
    amount: int
    customer: str
    faults: tuple[str, ...] = ()
    choice: float = 0.0  # a seeded draw the operation may use (capture share, evidence, ...)


@dataclass(frozen=True)
class Fault:
    """A process or database fault, injected before operation ``at`` is started.

    Attributes:
      kind: ``server_kill9`` | ``postgres_kill9`` | ``worker_child_kill9`` |
        ``worker_role_kill9`` | ``realtime_kill9`` | ``pause``.
      target: the process (``server``, ``api``, ``worker``, ``realtime-2``, ``child:1`` = the second
        worker child by pid order, ``postmaster``).
      seconds: how long until the process is started again (``worker_role_kill9``,
        ``realtime_kill9``) or continued (``pause``).
    """

    at: int
    kind: str
    target: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Schedule:
    seed: int
    topology: str
    ops: tuple[Op, ...]
    faults: tuple[Fault, ...]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def faults_at(self, index: int) -> list[Fault]:
        return [f for f in self.faults if f.at == index]


def _at(rng: random.Random, low: int, high: int) -> int:
    """An operation index in [low, high) (at least ``low``, for short runs)."""
    return rng.randrange(low, max(low + 1, high))


def make_schedule(seed: int, operations: int, topology: Topology | None = None) -> Schedule:
    """The whole fault schedule for ``seed`` and ``topology``: a pure function of them.

    The operations, the server kill and the PostgreSQL crash are drawn as they
    always were (so ``single`` keeps its schedules); the topology's own faults
    come from a second generator seeded with the seed and the topology's name.

    Args:
      operations: how many operations (at least 8).
      topology: default ``single``.
    """
    topology = topology or Topology("single")
    operations = max(8, operations)
    rng = random.Random(seed)
    kinds = list(LEGS)
    ops = []
    for i in range(operations):
        kind = rng.choices(kinds, weights=[LEGS[k].weight for k in kinds])[0]
        leg = LEGS[kind]
        amount = rng.randrange(2, 90) * 100 + rng.choice([0, 10, 50])
        if leg.lost:
            amount = amount // 100 * 100 + 77
        faults = [leg.fault] if leg.fault else []
        if leg.webhook_faults:
            faults += [f for f, p in WEBHOOK_FAULTS.items() if rng.random() < p]
        ops.append(Op(i, kind, amount, rng.choice(CUSTOMERS), tuple(faults), round(rng.random(), 6)))
    server = "api" if topology.roles else "server"
    faults = [Fault(rng.randrange(operations // 4, operations // 2), "server_kill9", server),
              Fault(rng.randrange(operations // 2 + 1, 3 * operations // 4 + 1), "postgres_kill9", "postmaster")]
    more = random.Random(f"{seed}/{topology.name}")
    early, late = (operations // 10, operations // 4), (3 * operations // 4 + 1, 9 * operations // 10)
    if topology.workers:
        faults.append(Fault(_at(more, *early), "worker_child_kill9", f"child:{more.randrange(topology.workers)}"))
        faults.append(Fault(_at(more, *late), "pause", f"child:{more.randrange(topology.workers)}",
                            round(more.uniform(INBOX_LEASE_S + 2, INBOX_LEASE_S + 4), 1)))
    if topology.roles:
        faults.append(Fault(_at(more, *early), "worker_role_kill9", "worker", round(more.uniform(1, 6), 1)))
        faults.append(Fault(_at(more, operations // 2 + 1, 3 * operations // 4 + 1), "realtime_kill9",
                            f"realtime-{more.randrange(2) + 1}", round(more.uniform(1, 5), 1)))
        faults.append(Fault(_at(more, *late), "pause", "worker",
                            round(more.uniform(INBOX_LEASE_S + 2, INBOX_LEASE_S + 4), 1)))
    faults.sort(key=lambda f: f.at)
    return Schedule(seed, topology.name, tuple(ops), tuple(faults))


# ---------------------------------------------------------------------------- the driver


@dataclass
class Tally:
    operations: collections.Counter = field(default_factory=collections.Counter)
    faults: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    payments: list[str] = field(default_factory=list)
    realtime_frames: int = 0
    realtime_gaps: int = 0
    realtime_duplicates: int = 0
    # process name → reconnects of clients that were on it (or tried to reach it)
    realtime_reconnects: collections.Counter = field(default_factory=collections.Counter)
    standin: str = ""  # roles: how the stand-in worker of the pause fared


class Chaos:
    def __init__(self, schedule: Schedule, cluster: Cluster, concurrency: int, receiver,
                 delivery_wait_s: float = 60.0) -> None:
        self.schedule = schedule
        self.delivery_wait_s = delivery_wait_s
        self.cluster = cluster
        self.concurrency = concurrency
        self.receiver = receiver
        self.tally = Tally()
        self.leases = Watch(cluster.data_dir)
        self.api_key = ""
        self.accounts: dict[str, str] = {}
        self.restarting = trio.Event()
        self.restarting.set()  # set = the api process is up
        self.calm = trio.Event()
        self.calm.set()  # set = no process is stopped or waiting for its restart

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
        (await client.post("/v1/webhook_endpoints", json={"url": self.receiver.url,
                                                          "enabled_events": ENDPOINT_EVENTS})).raise_for_status()
        for customer in CUSTOMERS:
            account = (await client.post("/v1/accounts", json={"customer_id": customer, "currency": "INR"})).json()
            self.accounts[customer] = account["id"]
            await client.post(f"/v1/accounts/{account['id']}/deposits",
                              json={"amount": 200_000, "payment_method": _card("4242424242424242")})

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.cluster.api.url, timeout=15) as client:
            await self.setup(client)
            async with trio.open_nursery() as background:
                background.start_soon(self.leases.run, name="chaos:lease-watch")
                realtime = self.cluster.realtime()
                for i, customer in enumerate(CUSTOMERS[:3]):
                    background.start_soon(self.realtime_client, client, customer, i % len(realtime),
                                          name=f"chaos:realtime:{customer}")
                limiter = trio.Semaphore(self.concurrency)
                async with trio.open_nursery() as nursery:
                    for op in self.schedule.ops:
                        for fault in self.schedule.faults_at(op.index):
                            await self.inject(fault, background)
                        await limiter.acquire()
                        nursery.start_soon(self.guarded, client, op, limiter, name=f"chaos:op:{op.index}")
                await self.calm.wait()
                await self.settle(client)
                await trio.sleep(2)  # let the realtime clients read the last events
                background.cancel_scope.cancel()

    # ------------------------------------------------------------------------ faults

    async def inject(self, fault: Fault, background: trio.Nursery) -> None:
        """Inject ``fault`` (one at a time: a fault waits for the previous one's process to be back)."""
        await self.calm.wait()
        self.tally.faults[fault.kind] += 1
        if fault.kind == "server_kill9":
            await self.kill_api()
        elif fault.kind == "postgres_kill9":
            pid = await trio.to_thread.run_sync(self.cluster.crash_postgres)
            print(f"  op {fault.at}: kill -9 of the postmaster (pid {pid})", flush=True)
        elif fault.kind == "worker_child_kill9":
            await self.kill_child(fault)
        elif fault.kind == "worker_role_kill9":
            background.start_soon(self.kill_and_restart, fault, True, name="chaos:fault:worker")
        elif fault.kind == "realtime_kill9":
            background.start_soon(self.kill_and_restart, fault, False, name=f"chaos:fault:{fault.target}")
        elif fault.kind == "pause":
            background.start_soon(self.pause, fault, name=f"chaos:fault:pause:{fault.target}")
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    async def kill_api(self) -> None:
        self.restarting = trio.Event()
        await trio.sleep(0.3)  # in-flight requests meet the kill
        api = self.cluster.api
        await trio.to_thread.run_sync(api.kill9)
        await self.leases.record("server_kill9")
        print(f"  kill -9 of {api.name}; starting a new one", flush=True)
        await trio.to_thread.run_sync(api.start)
        self.restarting.set()

    def _child(self, target: str) -> int | None:
        children = self.cluster.worker_children()
        index = int(target.split(":")[1])
        return children[index % len(children)] if children else None

    async def kill_child(self, fault: Fault) -> None:
        """``kill -9`` of one ``--workers`` child; the parent starts another."""
        pid = self._child(fault.target)
        if pid is None:
            return
        await self._hold_leases()
        cluster_mod.kill9(pid)
        await self.leases.record(fault.kind)
        print(f"  op {fault.at}: kill -9 of worker {fault.target} (pid {pid}); its parent restarts it", flush=True)

    async def _hold_leases(self, timeout: float = 3.0) -> None:
        """Make the run's endpoint slow for a moment and wait (bounded) until some lease is held,
        so that the process about to fail is likely to hold delivery and inbox leases."""
        self.receiver.delay_s = 2.0
        try:
            with trio.move_on_after(timeout):
                while True:
                    held = await trio.to_thread.run_sync(_leased_counts, self.cluster.data_dir)
                    if held[0] and held[1]:
                        return
                    await trio.sleep(0.05)
        finally:
            self.receiver.delay_s = 0.0

    async def kill_and_restart(self, fault: Fault, holds_leases: bool) -> None:
        """``kill -9`` of a role's process, started again after ``fault.seconds``."""
        process = self.cluster.processes[fault.target]
        self.calm = calm = trio.Event()
        try:
            if holds_leases:
                await self._hold_leases()
            await trio.to_thread.run_sync(process.kill9)
            if holds_leases:
                await self.leases.record(fault.kind)
            print(f"  op {fault.at}: kill -9 of {process.name}; restarting it in {fault.seconds} s", flush=True)
            await trio.sleep(fault.seconds)
            await trio.to_thread.run_sync(process.start)
        finally:
            calm.set()

    async def pause(self, fault: Fault) -> None:
        """``SIGSTOP`` of a process for ``fault.seconds`` (longer than an inbox lease), then ``SIGCONT``.

        ``roles`` has one worker: a stand-in worker is started during the pause to
        take the stopped one's leases over, and stopped after it continues. The
        ``SIGCONT`` comes on time whether or not the stand-in is up: a process stopped
        while it held the embedded PostgreSQL's start lock (its supervisor restarting
        the server) keeps every other process from starting until it continues.
        """
        self.calm = calm = trio.Event()
        standin = self.cluster.standin(fault.target) if self.cluster.topology.roles else None
        try:
            pid = self._child(fault.target) if fault.target.startswith("child:") else \
                self.cluster.processes[fault.target].proc.pid
            if pid is None:
                return
            await self._hold_leases()
            cluster_mod.pause(pid)
            paused_at = trio.current_time()
            await self.leases.record(fault.kind)
            print(f"  op {fault.at}: SIGSTOP of {fault.target} (pid {pid}) for {fault.seconds} s", flush=True)
            async with trio.open_nursery() as nursery:
                if standin is not None:
                    nursery.start_soon(self._start_standin, standin, name="chaos:standin")
                try:
                    await trio.sleep(max(0.0, fault.seconds - (trio.current_time() - paused_at)))
                finally:
                    cluster_mod.resume(pid)
                print(f"  SIGCONT of {fault.target} (pid {pid})", flush=True)
                await trio.sleep(3)  # its late applies meet the guards while the stand-in runs
        finally:
            if standin is not None:
                await trio.to_thread.run_sync(standin.stop)
            calm.set()

    async def _start_standin(self, standin) -> None:
        started_at = trio.current_time()
        try:
            await trio.to_thread.run_sync(standin.start)
        except RuntimeError as exc:  # reported; the run goes on without it
            self.tally.standin = f"did not start: {exc}"
            print(f"  stand-in {standin.name} {self.tally.standin}", flush=True)
            return
        self.tally.standin = f"listening after {trio.current_time() - started_at:.1f} s"
        print(f"  stand-in {standin.name} {self.tally.standin}", flush=True)

    # ------------------------------------------------------------------------ operations

    async def guarded(self, client, op: Op, limiter: trio.Semaphore) -> None:
        try:
            self.tally.operations[op.kind] += 1
            for fault in op.faults:
                self.tally.faults[fault] += 1
            await getattr(self, f"drive_{LEGS[op.kind].drive}")(client, op)
        except (httpx.HTTPError, KeyError, TypeError) as exc:
            self.tally.errors[f"op {type(exc).__name__}"] += 1
        finally:
            limiter.release()

    def _base(self, op: Op) -> dict:
        return {"amount": op.amount, "currency": "INR", "customer_id": op.customer, "confirm": True}

    async def drive_card(self, client, op: Op) -> None:
        number = {"card_declined": "4000000000000002", "card_dispute": "4000000000000259"}.get(
            op.kind, "4242424242424242")
        body = {**self._base(op), "payment_method": _card(number)}
        if "flaky_connector" in op.faults:
            body["connector"] = "flaky"
        payment = await self.request(client, "POST", "/v1/payments", body)
        if payment and "id" in payment:
            self.tally.payments.append(payment["id"])
            for attempt in payment.get("attempts") or []:
                if attempt.get("error_code") in ("connector_timeout", "connector_server_error"):
                    self.tally.faults[attempt["error_code"].replace("server_error", "500")] += 1
            if op.kind == "card_dispute":
                await self.answer_dispute(client, payment["id"], op)

    async def drive_manual(self, client, op: Op) -> None:
        payment = await self.request(client, "POST", "/v1/payments", {
            **self._base(op), "capture_method": "manual", "payment_method": _card("4242424242424242")})
        if payment and payment.get("status") == "requires_capture":
            if op.kind == "manual_capture":
                await self.request(client, "POST", f"/v1/payments/{payment['id']}/capture",
                                   {"amount": max(1, int(op.amount * (0.5 + op.choice / 2)))})
            else:
                await self.request(client, "POST", f"/v1/payments/{payment['id']}/cancel", {})

    async def drive_upi(self, client, op: Op) -> None:
        vpa = {"upi_sim": "success@upi" if op.choice < 0.7 else "failure@upi"}.get(op.kind, "pending@upi")
        payment = await self.request(client, "POST", "/v1/payments", {
            **self._base(op), "connector": "mockstripe", "payment_method": {"type": "upi", "upi": {"vpa": vpa}}})
        if payment and "id" in payment and LEGS[op.kind].webhook_faults:
            await self.gateway_webhooks(client, payment, op)

    async def drive_refund(self, client, op: Op) -> None:
        payment = await self.request(client, "POST", "/v1/payments", {
            **self._base(op), "amount": op.amount * 2, "payment_method": _card("4242424242424242")})
        if payment and payment.get("status") == "succeeded":
            await self.request(client, "POST", "/v1/refunds", {"payment_id": payment["id"], "amount": op.amount})

    async def drive_deposit(self, client, op: Op) -> None:
        await self.request(client, "POST", f"/v1/accounts/{self.accounts[op.customer]}/deposits",
                           {"amount": op.amount, "payment_method": _card("4242424242424242")})

    async def drive_withdrawal(self, client, op: Op) -> None:
        await self.request(client, "POST", f"/v1/accounts/{self.accounts[op.customer]}/withdrawals",
                           {"amount": op.amount})

    async def gateway_webhooks(self, client, payment: dict, op: Op) -> None:
        """The gateway's own webhook for a pending UPI payment, with the op's faults."""
        from domain.signatures import stripe_header

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

    # ------------------------------------------------------------------------ realtime

    async def realtime_client(self, client, customer: str, first: int) -> None:
        """A WebSocket client that reconnects with ``after_seq`` (to the next realtime process
        when its own went away) and checks its seq has no gap and no duplicate."""
        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        processes = self.cluster.realtime()
        at, last = first, 0
        while True:
            process = processes[at % len(processes)]
            await self.restarting.wait()  # tokens come from the api process
            try:
                tok = await client.post("/v1/realtime/tokens", json={"client_id": customer, "ttl_s": 3600})
                if tok.status_code != 201:
                    await trio.sleep(0.5)
                    continue
                query_string = urllib.parse.urlencode({"token": tok.json()["token"], "after_seq": last})
                url = process.url.replace("http://", "ws://") + "/v1/realtime?" + query_string
                async with open_websocket_url(url) as ws:
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame["type"] == "ping":
                            await ws.send_message('{"type": "pong"}')
                        elif frame["type"] == "event":
                            self.tally.realtime_frames += 1
                            if frame["seq"] <= last:
                                self.tally.realtime_duplicates += 1
                            elif frame["seq"] != last + 1:
                                self.tally.realtime_gaps += 1
                            last = max(last, frame["seq"])
                            await ws.send_message(json.dumps({"type": "ack", "seq": last}))
            except (ConnectionClosed, HandshakeError, OSError, httpx.HTTPError, trio.BrokenResourceError):
                self.tally.realtime_reconnects[process.name] += 1
                at += 1  # the other realtime process, if there is one
                await trio.sleep(0.3)

    # ------------------------------------------------------------------------ the end

    async def settle(self, client, timeout: float = 120) -> None:
        """Wait until nothing is left pending without a review flag (bounded), then up to
        ``delivery_wait_s`` until no outgoing webhook is waiting (a delivery lease of a
        killed holder lasts 45 s: what is still pending then is in the closing table)."""
        data_dir = self.cluster.data_dir
        for done, wait_s in ((lambda: pending_without_review(data_dir) == 0, timeout),
                             (lambda: deliveries_waiting(data_dir) == 0, self.delivery_wait_s)):
            deadline = trio.current_time() + wait_s
            while trio.current_time() < deadline and not await trio.to_thread.run_sync(done):
                await trio.sleep(1)


def _card(number: str) -> dict:
    return {"type": "card", "card": {"number": number}}


def _leased_counts(data_dir: pathlib.Path) -> tuple[int, int]:
    """(inbox rows, deliveries) leased right now; (0, 0) if the database does not answer."""
    try:
        row = query(data_dir, "SELECT (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL"
                              " AND claimed_until > now()) AS i, (SELECT count(*) FROM webhook_deliveries"
                              " WHERE status = 'pending' AND claimed_until > now()) AS d")[0]
    except Exception:  # noqa: BLE001 - restarting: nothing known
        return 0, 0
    return row["i"], row["d"]


PENDING_WITHOUT_REVIEW = """
SELECT (SELECT count(*) FROM payments WHERE status = 'processing' AND NOT review_required)
     + (SELECT count(*) FROM refunds WHERE status = 'pending' AND NOT review_required)
     + (SELECT count(*) FROM account_transactions WHERE status = 'pending' AND NOT review_required)
     + (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL) AS n
"""


def pending_without_review(data_dir: pathlib.Path) -> int:
    try:
        return int(query(data_dir, PENDING_WITHOUT_REVIEW)[0]["n"])
    except Exception:  # noqa: BLE001 - the database may be restarting: not settled yet
        return -1


def deliveries_waiting(data_dir: pathlib.Path) -> int:
    """Outgoing webhooks not finished yet; -1 if the database does not answer."""
    try:
        return int(query(data_dir, "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'pending'")[0]["n"])
    except Exception:  # noqa: BLE001 - restarting: not settled yet
        return -1


def delivery_counts(data_dir: pathlib.Path) -> dict[str, int]:
    rows = query(data_dir, "SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


def _violations(check) -> int:
    found = sum(int(line.split("(")[1].split()[0]) for line in check.stdout.splitlines()
                if line.startswith("FAIL") and "(" in line)
    if check.returncode not in (0, 1):
        print(check.stdout + check.stderr, file=sys.stderr)
        found = max(found, 1)
    return found


def run_chaos(seed: int, operations: int, concurrency: int, keep: bool, topology: Topology,
              delivery_wait_s: float = 60.0) -> int:
    schedule = make_schedule(seed, operations, topology)
    replaced = cluster_mod.overridden({k: v for k, v in os.environ.items() if k.startswith("PAYCAST_")})
    if replaced:
        print(f"chaos: the run sets these itself (yours are not used): {', '.join(replaced)}", flush=True)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="pcchaos", dir="/tmp"))
    cluster = Cluster(topology, data_dir, dict(os.environ))
    print(f"chaos seed {seed} on {topology.name}: {len(schedule.ops)} operations, schedule {schedule.fingerprint()}; "
          + ", ".join(f"{f.kind} {f.target} at op {f.at}" for f in schedule.faults), flush=True)
    started = time.monotonic()
    check = None
    try:
        with Receiver() as receiver:
            cluster.start()
            chaos = Chaos(schedule, cluster, concurrency, receiver, delivery_wait_s)
            trio.run(chaos.run)
            left = pending_without_review(data_dir)
            deliveries = delivery_counts(data_dir)
            check = cluster.one_shot("check")  # beside the live processes: they keep running
            violations = _violations(check)
            received = receiver.ids()
        cluster.stop()
    finally:
        cluster.stop()
        if not keep:
            from pg.cluster import EmbeddedPostgres

            EmbeddedPostgres(data_dir).stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    tally = chaos.tally
    server_errors = sum(v for k, v in tally.errors.items() if k.startswith("500"))
    print("\n" + _table(schedule, tally, chaos, time.monotonic() - started, deliveries, received,
                        violations, left, server_errors))
    if violations and check is not None:
        print(check.stdout)
    ok = violations == 0 and left == 0 and tally.realtime_gaps == 0 and tally.realtime_duplicates == 0 \
        and server_errors == 0
    print("\nchaos: OK" if ok else "\nchaos: FAILED")
    return 0 if ok else 1


def _table(schedule: Schedule, tally: Tally, chaos: Chaos, elapsed: float, deliveries: dict[str, int],
           received: list[str], violations: int, left: int, server_errors: int) -> str:
    rows: list[tuple[str, object]] = [("seed", schedule.seed), ("topology", schedule.topology),
                                      ("schedule fingerprint", schedule.fingerprint()),
                                      ("elapsed (s)", f"{elapsed:.1f}"),
                                      ("operations", sum(tally.operations.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(tally.operations.items())]
    rows += [("faults injected", sum(tally.faults.values()))] + [(f"  {k}", v) for k, v in sorted(tally.faults.items())]
    rows += [("client-visible errors (expected under faults)", sum(tally.errors.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(tally.errors.items())]
    rows += chaos.leases.rows()
    if tally.standin:
        rows.append(("stand-in worker during the stop", tally.standin))
    rows += [("outgoing webhooks (deliveries by status)", json.dumps(deliveries, sort_keys=True)),
             ("outgoing webhooks received / distinct", f"{len(received)} / {len(set(received))}"),
             ("realtime frames", tally.realtime_frames),
             ("realtime reconnects", sum(tally.realtime_reconnects.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(tally.realtime_reconnects.items())]
    rows += [("realtime seq gaps", tally.realtime_gaps),
             ("realtime seq duplicates", tally.realtime_duplicates),
             ("invariant violations (run.py check)", violations),
             ("pending without review flag", left),
             ("500 responses (bugs: faults must give 503)", server_errors)]
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py simulate --chaos", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        topology = Topology.parse(args.topology)
    except TopologyError as exc:
        parser.error(str(exc))
    if args.print_schedule:
        schedule = make_schedule(args.seed, args.operations, topology)
        print(json.dumps({"fingerprint": schedule.fingerprint(), **asdict(schedule)}))
        return 0
    return run_chaos(args.seed, args.operations, args.concurrency, args.keep, topology, args.delivery_wait)


def add_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The chaos run's options (also shown by ``run.py simulate --help``)."""
    group = parser.add_argument_group("chaos run (--chaos)")
    group.add_argument("--chaos", action="store_true", required=required,
                       help="own servers, a seeded fault schedule, every invariant checked at the end")
    group.add_argument("--topology", default="single", metavar="single|workers:N|roles",
                       help="processes under test: one server (default), `serve --workers N`, "
                            "or api + worker + 2 realtime processes")
    group.add_argument("--seed", type=int, default=1)
    group.add_argument("--operations", type=int, default=300)
    group.add_argument("--concurrency", type=int, default=8)
    group.add_argument("--print-schedule", action="store_true", help="print the seed's fault schedule and exit")
    group.add_argument("--delivery-wait", type=float, default=60.0, metavar="S",
                       help="at the end, wait up to S seconds for outgoing webhooks still pending (default 60: "
                            "a killed holder's delivery lease lasts 45 s)")
    group.add_argument("--keep", action="store_true", help="keep the data directory (and its PostgreSQL)")
