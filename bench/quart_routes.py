#!/usr/bin/env python3
"""What Quart costs on the merchant hot routes, in process, and what serving them at the ASGI level
saves (issue 22). Not a test.

    .venv/bin/python bench/quart_routes.py                          # 5,000 requests per route, 3 rounds
    .venv/bin/python bench/quart_routes.py --requests 500 --rounds 1 --profile   # + where the time goes

``POST /v1/payments`` (a card, no confirm), ``POST /v1/payments/{id}/confirm`` and
``/capture`` (with an ``Idempotency-Key``, as bench_compare's create → confirm sends it),
and ``POST /v1/refunds`` are driven straight into the Quart app (no server, no
database): the app's components are stubs that answer at once (the payments
service returns a fixed payment, the idempotency store claims every key, the
API key is found once, then in the key cache), so what is measured is the HTTP layer
of each route — Quart, werkzeug, our hooks, auth, rate limit, idempotency
hashing, body parsing and validation, rendering — not the work behind it.

Three targets, interleaved: the Quart app alone, the whole edge (``asgi_edge``)
with the hot POSTs through Quart (``PAYCAST_MERCHANT_POSTS_AT_ASGI=false``), and
the whole edge serving them at the ASGI level (app/merchant_endpoint.py).
Figures: process CPU µs per request (median of the rounds) and, with
``--profile``, the share of profiled time (tottime) by where the code lives:
``quart`` (quart, quart_trio, werkzeug, flask, blinker: what serving the route at
the ASGI level would drop or replace), ``ours`` (app/, domain/, telemetry/,
storage/), ``pydantic``/``orjson`` (parsing, kept either way), ``trio``,
``other``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pathlib
import pstats
import statistics
import sys
import time
from types import SimpleNamespace

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PAYCAST_LOG_LEVEL", "WARNING")

import orjson  # noqa: E402
import trio  # noqa: E402

API_KEY = "sk_test_bench_quart_routes"
PAYMENT = {"id": "pay_0123456789abcdefghij", "object": "payment", "status": "succeeded", "amount": 1000,
           "currency": "INR", "amount_captured": 1000, "amount_refunded": 0, "connector": "fakepay",
           "payment_method": {"type": "card", "card": {"first6": "424242", "last4": "4242"}},
           "metadata": {}, "created": "2026-12-06T05:00:00Z", "attempts": []}


class _Payments:
    routing = SimpleNamespace(known_connectors={"fakepay"})

    async def create(self, merchant_id, spec):
        return PAYMENT

    async def ask_payment(self, payment_id, message):
        return PAYMENT


class _Keys:
    async def claim(self, merchant_id, key, request_hash):
        return None

    async def complete(self, merchant_id, key, status, body):
        return None

    async def release(self, merchant_id, key):
        return None


class _Merchants:
    async def by_key_hash(self, key_hash):
        return {"id": "mer_bench"}  # the first request's lookup; the key cache answers the rest


class _Components:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.db = None
        self.realtime = None
        self.payments = _Payments()
        self.idempotency_keys = _Keys()
        self.merchants = _Merchants()


def routes() -> dict[str, tuple[str, bytes, bool]]:
    """name → (path, body, with an Idempotency-Key)."""
    pid = PAYMENT["id"]
    return {
        "create": ("/v1/payments", orjson.dumps({"amount": 1000, "currency": "INR", "order_id": "ord_1",
                                                  "payment_method": {"type": "card",
                                                                     "card": {"number": "4242424242424242"}},
                                                  "metadata": {"cart": "42"}}), False),
        "confirm": (f"/v1/payments/{pid}/confirm", b"{}", True),
        "capture": (f"/v1/payments/{pid}/capture", orjson.dumps({"amount": 1000}), True),
        "refund": ("/v1/refunds", orjson.dumps({"payment_id": pid, "amount": 100, "reason": "requested_by_customer"}),
                   True),
    }


def scope_for(path: str, body: bytes, idempotent: bool) -> dict:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*"),
               (b"authorization", f"Bearer {API_KEY}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if idempotent:
        headers.append((b"idempotency-key", b"bench_key_0123456789"))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "extensions": {}}


class _Exchange:
    __slots__ = ("body", "read", "done", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.read = False
        self.done: trio.Event | None = None
        self.status = 0

    async def receive(self) -> dict:
        if not self.read:
            self.read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            if self.done is None:
                self.done = trio.Event()
            self.done.set()


def build_targets() -> dict:
    """The Quart app alone, the whole edge with the hot POSTs through Quart, and the whole edge
    serving them at the ASGI level (app/merchant_endpoint.py, production's default)."""
    from app.server import asgi_edge, create_app
    from config import load_settings

    settings = load_settings().model_copy(update={"rate_limit_rps": 1e9, "rate_limit_burst": 1e9})
    via_quart = create_app(_Components(settings.model_copy(update={"merchant_posts_at_asgi": False})), "adm_bench")
    at_asgi = create_app(_Components(settings), "adm_bench")
    return {"quart": via_quart, "edge_quart": asgi_edge(via_quart), "edge_asgi": asgi_edge(at_asgi)}


async def one_round(app, scope: dict, body: bytes, n: int) -> float:
    async def request() -> int:
        x = _Exchange(body)
        await app(dict(scope), x.receive, x.send)
        return x.status

    for _ in range(50):
        status = await request()
    if status >= 300:
        raise SystemExit(f"{scope['path']} answered {status}: the stubs no longer fit the route")
    gc.collect()
    cpu0 = time.process_time()
    for _ in range(n):
        await request()
    return (time.process_time() - cpu0) / n * 1e6


SP = "/site-packages/"
GROUPS = (("quart", tuple(SP + p for p in ("quart/", "quart_trio/", "werkzeug/", "flask/", "blinker/"))),
          ("pydantic", (SP + "pydantic/", SP + "pydantic_core/")), ("orjson", ("orjson",)),
          ("trio", (SP + "trio/",)), ("ours", (str(ROOT) + "/",)))


def group_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    for name, marks in GROUPS:
        if name == "ours":
            if filename.startswith(marks[0]) and "/site-packages/" not in filename:
                return name
        elif any(m in filename for m in marks):
            return name
    return "other"


async def profiled(app, scope: dict, body: bytes, n: int) -> dict[str, float]:
    x_scope = dict(scope)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        x = _Exchange(body)
        await app(dict(x_scope), x.receive, x.send)
    prof.disable()
    stats = pstats.Stats(prof).stats
    shares: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.items():
        shares[group_of(filename)] = shares.get(group_of(filename), 0.0) + tottime
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


async def main_async(args) -> None:
    targets = build_targets()
    app = targets["quart"]
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for route, (path, body, idem) in routes().items():
            for target, asgi in targets.items():
                results.setdefault((route, target), []).append(
                    await one_round(asgi, scope_for(path, body, idem), body, args.requests))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print("| route | Quart app, CPU µs/request | whole edge through Quart | whole edge, ASGI endpoint | ratio |")
    print("|---|---:|---:|---:|---:|")
    for route in routes():
        quart, edge_quart, edge_asgi = (statistics.median(results[(route, t)]) for t in targets)
        print(f"| {route} | {quart:.1f} | {edge_quart:.1f} | {edge_asgi:.1f} | {edge_asgi / edge_quart:.2f} |")
    if args.profile:
        print()
        print("| route (Quart app, profiled) | " + " | ".join(g for g, _ in GROUPS) + " | builtins | other |")
        print("|---|" + "---:|" * (len(GROUPS) + 2))
        for route, (path, body, idem) in routes().items():
            shares = await profiled(app, scope_for(path, body, idem), body, args.requests)
            cells = [f"{shares.get(g, 0.0) * 100:.0f} %" for g, _ in GROUPS]
            cells += [f"{shares.get('builtins', 0.0) * 100:.0f} %", f"{shares.get('other', 0.0) * 100:.0f} %"]
            print(f"| {route} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests per route and round (5000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept (3)")
    parser.add_argument("--profile", action="store_true", help="also profile each route once, by package")
    args = parser.parse_args(argv)
    trio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
