"""``run.py simulate``: realistic demo traffic against a running Paycast.

Creates a merchant (admin token) or uses an API key, then drives a mix of card
payments (successes, declines, insufficient funds), manual captures (partial),
cancels, UPI payments resolved by the gateway simulator's webhooks and UPI
payments that only reconciliation resolves; shows a progress bar; waits for the
asynchronous ones; and ends with a summary table.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import time

import httpx
import trio

CARDS = {
    "card_ok": ("4242424242424242", 50),
    "card_declined": ("4000000000000002", 8),
    "card_no_funds": ("4000000000009995", 5),
}
UPI = {"upi_success": ("success@upi", 20), "upi_failure": ("failure@upi", 5), "upi_pending": ("pending@upi", 2)}
MANUAL = 7   # weight of manual-capture card payments (half captured in part, half canceled)


def _mix(rng: random.Random) -> str:
    kinds = {**{k: w for k, (_, w) in CARDS.items()}, **{k: w for k, (_, w) in UPI.items()}, "manual": MANUAL}
    return rng.choices(list(kinds), weights=list(kinds.values()))[0]


class Simulation:
    def __init__(self, base_url: str, api_key: str, total: int, concurrency: int, seed: int) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.total = total
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self.kinds: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.payment_ids: list[str] = []
        self.done = 0

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict | None = None) -> httpx.Response:
        started = time.perf_counter()
        r = await client.post(path, json=body or {}, headers={"Idempotency-Key": f"sim-{self.rng.random()}"})
        self.latencies.append(time.perf_counter() - started)
        if r.status_code >= 400:
            self.errors[f"{r.status_code} {r.json().get('error', {}).get('code', '')}"] += 1
        return r

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        kind = _mix(self.rng)
        self.kinds[kind] += 1
        amount = self.rng.randrange(100, 50_000)
        order = (await self._post(client, "/v1/orders", {"amount": amount, "currency": "INR",
                                                         "customer_id": f"cus_{i % 50}"})).json()
        body: dict = {"amount": amount, "currency": "INR", "order_id": order.get("id"), "confirm": True,
                      "connector": self.rng.choice(["mockstripe", "mockrazorpay"])}
        if kind in UPI:
            body["payment_method"] = {"type": "upi", "upi": {"vpa": UPI[kind][0]}}
        else:
            number = CARDS.get(kind, CARDS["card_ok"])[0]
            body["payment_method"] = {"type": "card", "card": {"number": number}}
            if kind == "manual":
                body["capture_method"] = "manual"
        payment = (await self._post(client, "/v1/payments", body)).json()
        if "id" in payment:
            self.payment_ids.append(payment["id"])
            if kind == "manual" and payment.get("status") == "requires_capture":
                if self.rng.random() < 0.5:
                    await self._post(client, f"/v1/payments/{payment['id']}/capture", {"amount": amount // 2 or 1})
                else:
                    await self._post(client, f"/v1/payments/{payment['id']}/cancel")
        self.done += 1

    async def run(self) -> None:
        limiter = trio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._progress, name="simulate:progress")
                for i in range(self.total):
                    await limiter.acquire()
                    nursery.start_soon(self._guarded, client, i, limiter, name="simulate:payment")
                while self.done < self.total:
                    await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            print()
            await self._settle(client)

    async def _guarded(self, client, i, limiter) -> None:
        try:
            await self._one(client, i)
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
            self.done += 1
        finally:
            limiter.release()

    async def _progress(self) -> None:
        while True:
            width = 40
            filled = int(width * self.done / max(1, self.total))
            sys.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} payments")
            sys.stdout.flush()
            await trio.sleep(0.2)

    async def _settle(self, client: httpx.AsyncClient, timeout: float = 30) -> None:
        """Wait (bounded) for the asynchronous payments to leave ``processing``."""
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            statuses = await self.statuses(client)
            if statuses.get("processing", 0) == 0:
                return
            sys.stdout.write(f"\rwaiting for {statuses['processing']} processing payments (webhooks, reconciliation)…")
            sys.stdout.flush()
            await trio.sleep(1)
        print()

    async def statuses(self, client: httpx.AsyncClient) -> collections.Counter:
        counts: collections.Counter = collections.Counter()
        after = None
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            page = (await client.get("/v1/payments", params=params)).json()
            counts.update(p["status"] for p in page["data"])
            if not page["has_more"]:
                return counts
            after = page["data"][-1]["id"]

    async def summary(self) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30) as client:
            statuses = await self.statuses(client)
            events = collections.Counter()
            after = None
            while True:
                params = {"limit": 100, **({"starting_after": after} if after else {})}
                page = (await client.get("/v1/events", params=params)).json()
                events.update(e["type"] for e in page["data"])
                if not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
        lat = sorted(self.latencies)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
        rows = [("payments by status", "")] + [(f"  {k}", v) for k, v in sorted(statuses.items())]
        rows += [("traffic mix", "")] + [(f"  {k}", v) for k, v in sorted(self.kinds.items())]
        rows += [
                 ("resolved asynchronously (webhook or reconciliation)", events.get("payment.processing", 0)),
                 ("flagged for review", events.get("payment.review_required", 0)),
                 ("orders paid", events.get("order.paid", 0)),
                 ("requests", len(lat)),
                 ("latency p50 / p99 (ms)", f"{p(0.5):.1f} / {p(0.99):.1f}"),
                 ("mean latency (ms)", f"{statistics.fmean(lat) * 1000:.1f}" if lat else "-")]
        rows += [("errors", "")] + [(f"  {k}", v) for k, v in sorted(self.errors.items())]
        width = max(len(str(k)) for k, _ in rows) + 2
        return "\n".join(f"{k:<{width}}{v}" for k, v in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the running Paycast (default :8080)")
    parser.add_argument("--admin-token", help="creates a demo merchant (default: PAYCAST_ADMIN_TOKEN)")
    parser.add_argument("--api-key", help="use this merchant instead of creating one")
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    chaos = parser.add_argument_group(
        "chaos run", "--chaos starts its own servers instead (run.py simulate --chaos --help for its options)")
    chaos.add_argument("--chaos", action="store_true",
                       help="seeded fault schedule against its own servers, every invariant checked at the end")
    chaos.add_argument("--topology", metavar="single|workers:N|roles",
                       help="with --chaos: one server (default), `serve --workers N`, or api + worker + "
                            "2 realtime processes on one data directory")
    args = parser.parse_args(argv)
    if args.topology:
        parser.error("--topology needs --chaos")
    import os

    api_key = args.api_key
    if not api_key:
        token = args.admin_token or os.environ.get("PAYCAST_ADMIN_TOKEN")
        if not token:
            parser.error("give --api-key, or --admin-token / PAYCAST_ADMIN_TOKEN to create a demo merchant")
        try:
            r = httpx.post(f"{args.url}/admin/merchants", json={"name": "simulated merchant"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        except httpx.HTTPError as exc:
            print(f"simulate: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        if r.status_code != 201:
            print(f"simulate: creating the merchant failed: {r.status_code} {r.text}", file=sys.stderr)
            return 1
        api_key = r.json()["api_key"]
        print(f"demo merchant {r.json()['merchant']['id']} (api key {api_key})")
    sim = Simulation(args.url, api_key, args.payments, args.concurrency, args.seed)
    started = time.perf_counter()
    trio.run(sim.run)
    elapsed = time.perf_counter() - started
    print(f"\n{args.payments} payments in {elapsed:.1f} s\n")
    print(trio.run(sim.summary))
    return 0
