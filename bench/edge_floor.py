#!/usr/bin/env python3
"""The HTTP edge's floor: server CPU per bare request on each server stack, in one run (issue 22).

    .venv/bin/python bench/edge_floor.py --no-save                       # 3 rounds, 5 s per cell, 32 connections
    .venv/bin/python bench/edge_floor.py --variants trio trio_edge --rounds 5 --no-save   # an A/B
    .venv/bin/python bench/edge_floor.py --count --no-save               # + trio scheduler counts per request

Every cell is a fresh server process (this script with ``--serve VARIANT``) loaded by wrk
(1 thread, ``--connections`` keep-alive connections, ``GET /healthz``) after an unmeasured
warm-up; the server's CPU (psutil, user + system) ÷ the requests wrk completed is the
cost per request. The order of the variants rotates between rounds, so that busy
neighbours disturb them alike; the table holds medians over rounds. Variants:

- ``trio``: a bare ASGI app (200 ``ok``, no middleware) on ``hypercorn.trio.serve``, with
  the Config Paycast uses (app/server.py ``serve_http``);
- ``asyncio``: the same app and Config on ``hypercorn.asyncio.serve`` with uvloop;
- ``trio_edge``: the same app on hypercorn's trio worker with Paycast's adapter
  (:func:`app.trio_edge.install`: the keep-alive timeout as a read deadline, writes tried
  directly on the socket) — the change under test against ``trio``;
- ``quart``: the same server and adapter as ``trio_edge`` serving a Quart app with nothing of
  Paycast's but its per-request trims (app/context.py ``PaycastApp``'s connection, request and
  URL-map classes): one route, ``GET /healthz`` → 200 ``ok``, no hooks, no middleware —
  the floor of a route behind Quart on the fixed stack (trio, hypercorn, quart-trio);
- ``paycast``: ``run.py serve`` (one process, embedded PostgreSQL in a temp dir, as
  bench/bench_compare.py starts it) and its ``GET /healthz`` through the whole edge;
- ``reference``: the reference service (bench/reference, FastAPI + uvicorn + asyncpg, the plain
  way) and its ``GET /ping``, as bench/bench_compare.py's ``bare`` flow compares it: to read the
  floors as the issue's ratios to the reference;
- ``paycast_base`` (with ``--base DIR``): ``run.py serve`` of another checkout (e.g. main, with
  its own ``.venv``) on the same database: the whole server's A/B in one run;
- ``h11``: no hypercorn: a minimal trio + h11 keep-alive server (one task per connection,
  ``receive_some`` / ``send_all``), trio's own floor for HTTP/1.1.

``--count`` adds, for the trio variants, one short extra run per variant with a trio
Instrument in the server counting per request: tasks spawned, task steps (each a trip
through trio's scheduler), scheduler batches and I/O waits (each an ``epoll_wait``).
Those runs are not timed (the instrument costs CPU).

Appends the table with the command to bench/RESULTS.md unless ``--no-save``.
Nothing is asserted: a benchmark is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("trio", "asyncio", "trio_edge", "quart", "paycast", "h11", "reference", "paycast_base")
DEFAULT_VARIANTS = ("trio", "asyncio", "trio_edge", "quart", "paycast", "h11")
TRIO_VARIANTS = ("trio", "trio_edge", "quart", "h11")
LABELS = {
    "trio": "bare ASGI app, hypercorn trio worker",
    "asyncio": "bare ASGI app, hypercorn asyncio worker (uvloop)",
    "trio_edge": "bare ASGI app, hypercorn trio worker + `app.trio_edge`",
    "quart": "one-route Quart app (Paycast's trims, no hooks), hypercorn trio worker + `app.trio_edge`",
    "paycast": "Paycast `run.py serve`, `GET /healthz`",
    "h11": "raw trio + h11 keep-alive server (no hypercorn)",
    "paycast_base": "Paycast `run.py serve` of `--base DIR`, `GET /healthz`",
    "reference": "reference service (FastAPI + uvicorn), `GET /ping`",
}
BODY = b"ok"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


# --------------------------------------------------------------------------- the servers (child processes)


async def bare_app(scope, receive, send) -> None:
    """A bare ASGI app: 200 ``ok`` to every HTTP request, lifespan accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def hypercorn_config(edge: bool = False):
    """The Config of app/server.py ``serve_http`` (:func:`app.http_config.configure`) on a free
    port; ``edge``: app.trio_edge's (the Date header formatted once a second)."""
    from hypercorn.config import Config

    from app import http_config, trio_edge

    config = http_config.configure(trio_edge.config() if edge else Config())
    config.bind = ["127.0.0.1:0"]
    return config


def _listening(url: str) -> None:
    print(json.dumps({"event": "listening", "url": url}), flush=True)


class Counter:
    """A trio Instrument counting scheduler work; printed as JSON on stderr at exit."""

    def __init__(self) -> None:
        self.counts = {"spawned": 0, "steps": 0, "batches": 0, "io_waits": 0}

    def task_spawned(self, task) -> None:
        self.counts["spawned"] += 1

    def before_task_step(self, task) -> None:
        self.counts["steps"] += 1

    def before_run(self) -> None:
        pass

    def before_io_wait(self, timeout) -> None:
        self.counts["io_waits"] += 1
        # A batch ends with an I/O wait (0 s when tasks are runnable).
        self.counts["batches"] += 1

    def dump(self) -> None:
        print("COUNTS " + json.dumps(self.counts), file=sys.stderr, flush=True)


def _trio_run(main, count: bool) -> None:
    import trio

    counter = Counter() if count else None
    try:
        trio.run(main, instruments=[counter] if counter else [])
    finally:
        if counter:
            counter.dump()


def quart_app():
    """A Quart app with PaycastApp's per-request trims and one route, nothing else of Paycast's."""
    from app.quart_http import CycleFreeMap, InlineHTTPConnection, PaycastRequest
    from quart_trio import QuartTrio

    class FloorApp(QuartTrio):
        asgi_http_class = InlineHTTPConnection
        request_class = PaycastRequest
        url_map_class = CycleFreeMap

    app = FloorApp("floor")

    @app.get("/healthz")
    async def healthz():
        return BODY, 200, {"content-type": "text/plain"}

    return app


async def _hypercorn_trio_main(edge: bool, app=bare_app) -> None:
    import trio
    from hypercorn.trio import serve

    if edge:
        from app import trio_edge

        trio_edge.install()
    stop = trio.Event()

    async def on_signal():
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signal)
        binds = await nursery.start(lambda task_status: serve(app, hypercorn_config(edge), mode="asgi",
                                                              shutdown_trigger=stop.wait, task_status=task_status))
        _listening(binds[0])
        await stop.wait()


def serve_asyncio() -> None:
    import asyncio

    import uvloop
    from hypercorn.asyncio import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        config = hypercorn_config()
        # hypercorn.asyncio.serve reports no binds: bind the socket here and hand it over by descriptor.
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config.bind = [f"fd://{sock.detach()}"]
        server = asyncio.ensure_future(serve(bare_app, config, shutdown_trigger=stop.wait, mode="asgi"))
        await asyncio.sleep(0.3)  # listening by then (the socket is bound already; connects would queue anyway)
        _listening(f"http://127.0.0.1:{port}")
        await server

    uvloop.run(main())


async def _h11_main() -> None:
    """A minimal keep-alive HTTP/1.1 server on trio + h11: trio's floor, no hypercorn."""
    import h11
    import trio

    async def connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    continue
                if isinstance(event, h11.EndOfMessage):
                    await stream.send_all(conn.send(h11.Response(status_code=200, headers=HEADERS))
                                          + conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                    continue
                if isinstance(event, (h11.ConnectionClosed,)) or conn.our_state is h11.MUST_CLOSE:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    _listening(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, connection, listeners)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def serve(variant: str, count: bool) -> None:
    """The child process: serve ``variant`` until SIGTERM."""
    if variant == "asyncio":
        serve_asyncio()
    elif variant in ("trio", "trio_edge"):
        _trio_run(lambda: _hypercorn_trio_main(variant == "trio_edge"), count)
    elif variant == "quart":
        _trio_run(lambda: _hypercorn_trio_main(True, quart_app()), count)
    elif variant == "h11":
        _trio_run(_h11_main, count)
    else:
        raise SystemExit(f"--serve {variant}: not a bare server")


# --------------------------------------------------------------------------- the runs (parent)


class Floor:
    """The database (only for ``paycast`` and ``reference``), the wrk work dir, and one cell at a time."""

    def __init__(self, args) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="paycast-edge-floor-", dir="/tmp")
        self.workdir = pathlib.Path(self.tmp) / "wrk"
        self.workdir.mkdir()
        self.pg = None
        self.dsn: str | None = None
        self.wrk = None
        self.current = None

    def _register(self, proc) -> None:
        self.wrk = proc

    def start(self, variant: str, count: bool = False):
        from bench.bench_compare import Process, start_paycast, start_reference

        if variant in ("paycast", "paycast_base", "reference"):
            if self.dsn is None:
                from bench.common import embedded_postgres

                self.pg = embedded_postgres(pathlib.Path(self.tmp) / "db", "paycast_bench", "reference")
                self.dsn = self.pg.dsn("paycast_bench")
            if variant == "paycast_base":
                return self._start_base()
            if variant == "reference":
                return start_reference(self.pg.dsn("reference"), 1).process
            return start_paycast(self.dsn, 1, {}, 0).process
        argv = [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", variant]
        if count:
            argv.append("--count-in-server")
        return Process(variant, argv, dict(os.environ)).wait_listening()

    def _start_base(self):
        """``run.py serve`` of ``--base`` with its own venv, set up as bench_compare's ``start_paycast``."""
        import secrets

        from bench.bench_compare import PAYCAST_ENV, Process

        base = pathlib.Path(self.args.base).resolve()
        python = base / ".venv" / "bin" / "python"
        env = dict(os.environ, PAYCAST_DATABASE_URL=self.dsn, PAYCAST_PORT="0", PAYCAST_LOG_LEVEL="WARNING",
                   PAYCAST_ADMIN_TOKEN="adm_bench_" + secrets.token_hex(8), PAYCAST_WORKERS="1", **PAYCAST_ENV)
        process = Process("paycast (base)", [str(python if python.exists() else sys.executable),
                                             str(base / "run.py"), "serve"], env)
        return process.wait_listening()

    def cell(self, variant: str) -> dict:
        import psutil

        from bench.common import CpuMeter, Scenario, children_cpu, run_wrk

        scenario = Scenario("bare", "GET", "/ping" if variant == "reference" else "/healthz", 200)
        process = self.current = self.start(variant)
        try:
            if self.args.warmup > 0:
                run_wrk(process.url, scenario, self.args.connections, self.args.warmup, self.workdir, self._register)
            meter = CpuMeter([process.proc.pid], include_children=False)
            main_thread = psutil.Process(process.proc.pid)  # its num_ctx_switches: the main thread's
            before = children_cpu()
            switches = main_thread.num_ctx_switches()
            meter.start()
            result = run_wrk(process.url, scenario, self.args.connections, self.args.duration, self.workdir,
                             self._register)
            cpu_s = meter.stop()
            after = main_thread.num_ctx_switches()
            result["loadgen_cpu_s"] = children_cpu() - before
        finally:
            process.stop()
            self.current = None
        result["rps"] = result["requests"] / result["duration_s"]
        result["cpu_us"] = cpu_s / max(1, result["requests"]) * 1e6
        result["cores"] = cpu_s / result["duration_s"]
        result["voluntary"] = (after.voluntary - switches.voluntary) / max(1, result["requests"])
        result["involuntary"] = (after.involuntary - switches.involuntary) / max(1, result["requests"])
        print(f"  {variant:10} {result['rps']:8,.0f} req/s  {result['cpu_us']:6.0f} µs/req  "
              f"{result['cores']:.2f} cores  switches/req {result['voluntary']:.2f}+{result['involuntary']:.2f}  p99 {result['p99_ms']:.2f} ms  bad {result['bad']} "
              f"socket errors {result['socket_errors']}", flush=True)
        return result

    def counts(self, variant: str) -> dict | None:
        """Scheduler counts per request in a short untimed run with the counting instrument."""
        from bench.common import Scenario, run_wrk

        if variant == "paycast":
            return None  # run.py has no such instrument switch; see the report for its profile
        scenario = Scenario("bare", "GET", "/ping" if variant == "reference" else "/healthz", 200)
        process = self.start(variant, count=True)
        try:
            result = run_wrk(process.url, scenario, self.args.connections, 2, self.workdir, self._register)
        finally:
            process.stop()
        for line in process.stderr:
            if line.startswith("COUNTS "):
                counts = json.loads(line[len("COUNTS "):])
                return {k: v / max(1, result["requests"]) for k, v in counts.items()}
        return None

    def close(self) -> None:
        from bench.common import stop_everything

        servers = [self.current] if self.current is not None else []
        stop_everything(self.wrk, servers, self.pg, [self.tmp])


def render(variants: list[str], runs: dict[str, list[dict]], counts: dict[str, dict | None]) -> str:
    base = statistics.median(r["cpu_us"] for r in runs["trio"]) if "trio" in runs else None
    lines = ["| variant | req/s | server CPU µs/req | ratio to `trio` | all rounds µs/req | p99 ms | errors "
             "| context switches/req (voluntary + involuntary) |"
             + (" spawned/req | task steps/req | batches/req |" if counts else ""),
             "|---|---:|---:|---:|---|---:|---:|---:|" + ("---:|---:|---:|" if counts else "")]
    for v in variants:
        rs = runs[v]
        cpu = statistics.median(r["cpu_us"] for r in rs)
        line = (f"| {LABELS[v]} | {statistics.median(r['rps'] for r in rs):,.0f} | {cpu:.0f} | "
                f"{cpu / base:.2f} |" if base else f"| {LABELS[v]} | {statistics.median(r['rps'] for r in rs):,.0f} "
                f"| {cpu:.0f} | |")
        every = ", ".join(f"{r['cpu_us']:.0f}" for r in rs)
        line += (f" {every} | {statistics.median(r['p99_ms'] for r in rs):.2f} "
                 f"| {sum(r['bad'] + r['socket_errors'] for r in rs)} "
                 f"| {statistics.median(r['voluntary'] for r in rs):.2f} + "
                 f"{statistics.median(r['involuntary'] for r in rs):.2f} |")
        if counts:
            c = counts.get(v)
            line += (f" {c['spawned']:.2f} | {c['steps']:.1f} | {c['batches']:.1f} |" if c else " | | |")
        lines.append(line)
    return "\n".join(lines)


def _measure(floor: Floor, args) -> None:
    """Every variant, ``args.rounds`` times in rotated order; the table printed and saved."""
    from bench.common import command_line, generator_description, load_average, machine_line, utc_now, write_results

    variants = list(dict.fromkeys(args.variants))
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        print(f"round {r + 1}/{args.rounds}: {' '.join(order)}", flush=True)
        for v in order:
            runs[v].append(floor.cell(v))
    counts: dict[str, dict | None] = {}
    if args.count:
        for v in variants:
            if v in TRIO_VARIANTS:
                counts[v] = floor.counts(v)
                print(f"  counts {v}: {counts[v]}", flush=True)
    table = render(variants, runs, counts)
    print()
    print(table)
    if not args.no_save:
        write_results(f"Edge floor (issue 22) — {utc_now()}", [
            f"- command: `{command_line('edge_floor.py')}`",
            f"- machine: {machine_line()}; load average at the end: {load_average()} (shared box)",
            (f"- generator: {generator_description()}, {args.connections} keep-alive connections, "
             f"{args.duration:g} s per cell after {args.warmup:g} s warm-up, {args.rounds} rounds, order "
             "rotated, a fresh server process per cell, medians"),
            "- server CPU = psutil user + system of the server process ÷ requests completed",
            *([f"- note: {args.note}"] if args.note else []),
        ], [table])
        print("\nappended to bench/RESULTS.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                        help=f"what to measure (default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the order rotates; medians shown (3)")
    parser.add_argument("--duration", type=float, default=5, help="seconds measured per cell (5)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of unmeasured load before each cell (1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections, keep-alive (32)")
    parser.add_argument("--count", action="store_true",
                        help="also count trio's scheduler work per request (extra untimed runs)")
    parser.add_argument("--base", metavar="DIR", help="another checkout for the paycast_base variant (its .venv)")
    parser.add_argument("--no-save", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--note", default="", help="one line saved with the results")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--count-in-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.serve and "paycast_base" in args.variants and not args.base:
        parser.error("the paycast_base variant needs --base DIR")
    if args.serve:
        serve(args.serve, args.count_in_server)
        return 0
    from bench.common import cleanup_on_exit, resolve_generator

    resolve_generator(parser)
    floor = Floor(args)
    try:
        with cleanup_on_exit(floor.close):
            _measure(floor, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
