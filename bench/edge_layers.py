#!/usr/bin/env python3
"""What each of our ASGI layers costs per request, in process, without a server
or a database (issue 22, "the edge"). Not a test: it measures and reports.

    .venv/bin/python bench/edge_layers.py                  # 20,000 GET /healthz per variant, 3 rounds
    .venv/bin/python bench/edge_layers.py --requests 5000 --rounds 1   # smoke

``GET /healthz`` is driven straight into the ASGI callables from one trio task
(no sockets, no hypercorn): a scope, a ``receive`` that hands over an empty
body, a ``send`` that drops the messages. Variants, from nothing to the full
edge (:func:`app.server.asgi_edge`):

- ``noop``: an ASGI app that answers 200 itself (the driver's own cost);
- ``noop + <layer>``: that app behind one of our layers alone;
- ``quart``: the Quart app alone (its routing, before/after request hooks, metrics);
- ``quart, floor``: a Quart app with the same trims and one route, no hooks (bench/edge_floor.py's
  ``quart`` variant): what Quart itself costs on our trims;
- ``quart, stock …``: the same with one of app/quart_http.py's cuts undone (``stock
  quart-trio``: all of them), to measure each against the same run;
- ``edge``: the whole edge, as hypercorn calls it (``edge, stock quart-trio``: with
  Quart as quart-trio serves it).

``--only quart`` keeps the variants whose name starts with ``quart``.

Figures: process CPU µs per request (``time.process_time``; one thread does the
work, so other load on the machine barely moves it) and the cycle collector's
young-generation count added per request (container objects allocated net of
those freed, with the collector off during a round: what the young collections
then have to walk). Rounds are interleaved (every variant once per round) and
the median is kept.
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PAYCAST_LOG_LEVEL", "WARNING")

import trio  # noqa: E402

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/healthz", "raw_path": b"/healthz", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
         "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "extensions": {}}


async def noop_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


class _Components:
    """What create_app and asgi_edge read of the components, for /healthz."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.db = None
        self.realtime = None


def stock(app, *, connection: bool = False, one_message: bool = False, matcher: bool = False,
          timeout: bool = False):
    """Undo app/quart_http.py's cuts on one app instance (issue 22, branch quart)."""
    from quart_trio.asgi import TrioASGIHTTPConnection
    from quart_trio.wrappers.request import TrioRequest
    from werkzeug.routing.matcher import StateMachineMatcher

    from app.quart_http import InlineHTTPConnection

    if connection:  # quart-trio's nursery + two tasks, and its body (two trio events)
        app.asgi_http_class = TrioASGIHTTPConnection
        app.request_class = TrioRequest
    if one_message:  # three response messages (start, body, empty end) instead of two
        app.asgi_http_class = type("ThreeMessages", (InlineHTTPConnection,),
                                   {"_send_response": TrioASGIHTTPConnection._send_response})
    if matcher:
        app.url_map._matcher.__class__ = StateMachineMatcher
    if timeout:  # quart's default: the response sent under a 60 s cancel scope
        app.config["RESPONSE_TIMEOUT"] = 60
    return app


def _floor_app():
    """bench/edge_floor.py's ``quart`` variant: PaycastApp's trims, one route, nothing else."""
    from bench.edge_floor import quart_app

    return quart_app()


def variants(only: str | None = None):
    from app.deadline import RequestDeadline
    from app.keepalive import CompleteExchange
    from app.limits import BodyLimit
    from app.realtime_endpoint import RealtimeEndpoint
    from app.server import asgi_edge, create_app
    from telemetry.http import TracingMiddleware
    from app.webhooks_endpoint import WebhooksEndpoint
    from config import load_settings

    settings = load_settings()
    app = create_app(_Components(settings), "adm_bench")
    metrics = app.config["METRICS"]

    def fresh():
        return create_app(_Components(settings), "adm_bench")

    found = {
        "noop": noop_app,
        "noop + CompleteExchange": CompleteExchange(noop_app, drain_bytes=settings.max_body_bytes),
        "noop + TracingMiddleware": TracingMiddleware(noop_app),
        "noop + RequestDeadline": RequestDeadline(noop_app, settings.request_deadline_s, metrics),
        "noop + BodyLimit": BodyLimit(noop_app, settings.max_body_bytes),
        "noop + RealtimeEndpoint": RealtimeEndpoint(noop_app, None),
        "noop + WebhooksEndpoint": WebhooksEndpoint(noop_app, None, metrics, settings.max_body_bytes),
        "quart": app,
        "quart, floor (one route, no hooks)": _floor_app(),
        "quart, again": fresh(),  # a second app as built: the control of the one-cut rows below
        "quart, stock quart-trio": stock(fresh(), connection=True, matcher=True, timeout=True),
        "quart, stock connection + body": stock(fresh(), connection=True),
        "quart, stock response messages": stock(fresh(), one_message=True),
        "quart, stock matcher": stock(fresh(), matcher=True),
        "quart, stock RESPONSE_TIMEOUT": stock(fresh(), timeout=True),
        "edge": asgi_edge(app),
        "edge, stock quart-trio": asgi_edge(stock(fresh(), connection=True, matcher=True, timeout=True)),
    }
    return {name: v for name, v in found.items() if only is None or name.startswith(only) or name == "noop"}


class _Exchange:
    """One request's ``receive`` and ``send``, as hypercorn behaves: the body once,
    then ``http.disconnect`` after the response is complete."""

    __slots__ = ("read", "done")

    def __init__(self) -> None:
        self.read = False
        self.done: trio.Event | None = None

    async def receive(self) -> dict:
        if not self.read:
            self.read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            if self.done is None:
                self.done = trio.Event()
            self.done.set()


async def one_round(app, n: int) -> tuple[float, float]:
    async def request() -> None:
        x = _Exchange()
        await app(dict(SCOPE), x.receive, x.send)

    for _ in range(50):  # warm: caches, first-call paths
        await request()
    gc.collect()
    gc.disable()
    try:
        count0 = gc.get_count()[0]
        cpu0 = time.process_time()
        for _ in range(n):
            await request()
        cpu = time.process_time() - cpu0
        young = gc.get_count()[0] - count0
    finally:
        gc.enable()
    return cpu / n * 1e6, young / n


async def main_async(args) -> dict[str, list[tuple[float, float]]]:
    apps = variants(args.only)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
    for r in range(args.rounds):
        for name, app in apps.items():
            results[name].append(await one_round(app, args.requests))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per variant and round (20000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept (3)")
    parser.add_argument("--only", help="only the variants whose name starts with this (and noop)")
    args = parser.parse_args(argv)
    results = trio.run(main_async, args)
    base = statistics.median(c for c, _ in results["noop"])
    print("| variant | CPU µs/request | … beyond `noop` | young objects/request (net) |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        cpu = statistics.median(c for c, _ in rows)
        young = statistics.median(y for _, y in rows)
        print(f"| {name} | {cpu:.1f} | {cpu - base:+.1f} | {young:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
