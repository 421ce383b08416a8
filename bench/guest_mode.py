#!/usr/bin/env python3
"""Trio as a guest on the uvloop loop against today's loop thread: the crossing to asyncpg (issue 22).

    .venv/bin/python bench/guest_mode.py                      # 3 rounds, 4 s per cell, 32 tasks, pool of 10
    .venv/bin/python bench/guest_mode.py --rounds 1 --seconds 1 --warmup 0.3 --no-save   # smoke

Variants (docs/architecture.md decision 1 is the first):

- ``loop_thread``: today's design. Trio runs in the main thread (``trio.run``);
  asyncpg runs on a uvloop loop in a thread of its own, the project's
  :class:`storage.loop_thread.LoopThread`. Its crossings coalesce: one
  ``call_soon_threadsafe`` there per batch of crossings the loop has not
  picked up yet, one ``TrioToken.run_sync_soon`` back per batch of finished
  units, each waiting task rescheduled directly (before, one of each per
  crossing; the ``loop_thread_batched`` variant of bench/RESULTS.md measured
  the change: "Follow-up: a coalescing loop thread").
- ``guest``: one thread. A uvloop loop runs in the main thread and trio runs on
  it as a guest (``trio.lowlevel.start_guest_run``); the pool lives on that
  loop. A crossing (:class:`GuestCrossing`) is ``loop.create_task`` from the
  trio task (same thread, no lock, no pipe), and the task's done callback
  reschedules the trio task directly (``trio.lowlevel.reschedule``).
  What guest mode cannot avoid: when trio has nothing runnable it waits for
  its own I/O (epoll) in a helper thread, so waking it (a reschedule when its
  run queue is empty) is a write to trio's wake-up socket, that thread's
  return and a ``call_soon_threadsafe`` back to the loop: a thread hand-off
  again. The ``helper trips`` column counts those waits in the helper thread.
- ``asyncio``: no trio: asyncio tasks on uvloop await asyncpg directly (the
  ceiling; no ``noop`` rows: nothing crosses).

Workloads, each measured after an unmeasured warm-up:

- ``noop_1``: one task, a no-op coroutine through the crossing, back to back
  (the CPU and latency of one crossing when nothing else runs);
- ``noop_N``: ``--tasks`` tasks doing the same (crossings that coalesce);
- ``select1``: ``--tasks`` tasks, each crossing acquires a connection and runs ``SELECT 1``;
- ``uow``: each crossing acquires, then ``BEGIN``, ``INSERT … RETURNING id``,
  ``UPDATE … WHERE id``, ``COMMIT`` (a unit of work's shape; commits wait for the disk);
- ``uow_async``: the same with ``synchronous_commit = off`` on the pool's
  sessions (no fsync wait: more crossings per second, the process busier);
- ``trio_io``: no database: ``--tasks`` tasks each send 64 bytes to an echo
  process over TCP and wait for them back (trio's own socket waits; what
  hypercorn's trio worker would pay per wake-up if it ran as a guest).
  ``loop_thread`` is then plain ``trio.run``;
- ``trio_io_1``: the same with one task, back to back (the echo on loopback
  is quick enough that trio seldom waits idle);
- ``trio_io_idle``: one task, the echo answering after 1 ms: trio waits idle
  for every reply, as a lightly loaded server waits for its next request
  (in guest mode, a helper-thread trip per wake-up).

Per workload and variant: operations/s, process CPU per operation (all
threads, ``time.process_time``), the share of that CPU outside the main thread
(``/proc/self/task``), voluntary context switches per operation
(``getrusage``: each is a thread going to sleep; a hand-off costs one or
two), latency p50/p99 measured by the calling task, and for ``guest`` the
helper-thread trips per operation. Every (variant, round) cell runs in a
fresh subprocess; the variants' order rotates between rounds; the table gives
the median over rounds. Nothing is asserted: a benchmark is a measurement.

Imports: the stdlib, trio (and ``outcome``, the type its low-level API takes),
asyncpg, uvloop, and from this project ``storage.loop_thread`` (variant
``loop_thread``), ``pg.cluster`` (the embedded PostgreSQL) and ``bench.common``
(results file, machine facts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("loop_thread", "guest", "asyncio")
WORKLOADS = ("noop_1", "noop_N", "select1", "uow", "uow_async", "trio_io", "trio_io_1", "trio_io_idle")
IDLE_REPLY_S = 0.001
DB_WORKLOADS = {"select1", "uow", "uow_async"}
PAYLOAD = b"x" * 64

TABLE_SQL = "CREATE TABLE IF NOT EXISTS guest_bench (id bigserial PRIMARY KEY, n int NOT NULL DEFAULT 0)"

# An echo server in a process of its own (its CPU is not ours): the peer of ``trio_io``.
ECHO_SERVER = r"""
import asyncio, sys
import uvloop

class Echo(asyncio.Protocol):
    delay = 0.0
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.transport.write, data)
        else:
            self.transport.write(data)

class LateEcho(Echo):
    delay = float(sys.argv[1])

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    late = await loop.create_server(LateEcho, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], late.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


# --------------------------------------------------------------------------- units of work (asyncio side)


async def noop() -> None:
    return None


async def select1(pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def uow(pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            row_id = await conn.fetchval("INSERT INTO guest_bench DEFAULT VALUES RETURNING id")
            await conn.execute("UPDATE guest_bench SET n = n + 1 WHERE id = $1", row_id)


def _connection_class():
    import asyncpg

    class Conn(asyncpg.Connection):
        def get_reset_query(self) -> str:  # as the product's CountingConnection: no reset round trip
            return ""

    return Conn


async def make_pools(dsn: str, size: int) -> dict:
    """Two pools of ``size`` connections, opened up front: synchronous commit on (server default) and off."""
    import asyncpg

    conn_class = _connection_class()
    sync = await asyncpg.create_pool(dsn, min_size=size, max_size=size, connection_class=conn_class)
    nosync = await asyncpg.create_pool(dsn, min_size=size, max_size=size, connection_class=conn_class,
                                       server_settings={"synchronous_commit": "off"})
    async with sync.acquire() as conn:
        await conn.execute(TABLE_SQL)
        await conn.execute("TRUNCATE guest_bench")
    return {"sync": sync, "nosync": nosync}


async def close_pools(pools: dict) -> None:
    for pool in pools.values():
        await pool.close()


def unit_for(workload: str, pools: dict):
    """A zero-argument factory of the coroutine one operation runs on the asyncio side."""
    if workload in ("noop_1", "noop_N"):
        return noop
    if workload == "select1":
        pool = pools["sync"]
        return lambda: select1(pool)
    pool = pools["sync" if workload == "uow" else "nosync"]
    return lambda: uow(pool)


# --------------------------------------------------------------------------- the guest crossing


class GuestCrossing:
    """Run an asyncio coroutine from a trio task when trio is a guest on that asyncio loop.

    Both run in one thread: the task is created directly (no ``*_threadsafe``),
    and its done callback, a host-loop callback, reschedules the trio task
    directly (the guest run's runner is this thread's). Shielded like
    :meth:`storage.loop_thread.LoopThread.run`: once crossed, the coroutine
    runs to its end and the trio task waits for it whatever is cancelled. The
    task copies the trio task's context (context variables reach it).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def run(self, coro):
        import outcome
        import trio

        task = trio.lowlevel.current_task()

        def wake(fut: asyncio.Future) -> None:
            trio.lowlevel.reschedule(task, outcome.capture(fut.result))

        self._loop.create_task(coro).add_done_callback(wake)
        return await trio.lowlevel.wait_task_rescheduled(_no_abort)


def _no_abort(raise_cancel):
    import trio

    return trio.lowlevel.Abort.FAILED


# --------------------------------------------------------------------------- measuring


_helper_trips = [0]


def _count_helper_trips() -> None:
    """Count guest mode's waits in the helper thread (trio's ``start_thread_soon`` in guest_tick)."""
    import trio._core._run as run_module

    original = run_module.start_thread_soon

    def counting(fn, deliver, name=None):
        _helper_trips[0] += 1
        return original(fn, deliver, name)

    run_module.start_thread_soon = counting


def _thread_ticks() -> tuple[int, int]:
    """(CPU ticks of the main thread, of all threads) from /proc/self/task (0, 0 where unreadable)."""
    main_tid = threading.main_thread().native_id
    main = total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        total += ticks
        if int(tid) == main_tid:
            main = ticks
    return main, total


def snapshot() -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    main, total = _thread_ticks()
    return {"wall": time.perf_counter(), "cpu": time.process_time(), "vcsw": ru.ru_nvcsw, "ivcsw": ru.ru_nivcsw,
            "trips": _helper_trips[0], "main_ticks": main, "all_ticks": total}


def summarize(before: dict, after: dict, latencies: list[float]) -> dict:
    ops = len(latencies)
    latencies.sort()
    wall = after["wall"] - before["wall"]
    ticks = after["all_ticks"] - before["all_ticks"]
    per = 1 / ops if ops else 0.0
    return {
        "ops": ops,
        "ops_s": ops / wall if wall else 0.0,
        "cpu_us": (after["cpu"] - before["cpu"]) * 1e6 * per,
        "off_main": (1 - (after["main_ticks"] - before["main_ticks"]) / ticks) if ticks > 0 else None,
        "vcsw": (after["vcsw"] - before["vcsw"]) * per,
        "ivcsw": (after["ivcsw"] - before["ivcsw"]) * per,
        "trips": (after["trips"] - before["trips"]) * per,
        "p50_ms": latencies[ops // 2] * 1000 if ops else 0.0,
        "p99_ms": latencies[min(ops - 1, int(ops * 0.99))] * 1000 if ops else 0.0,
    }


def _worker(op, seconds: float, latencies: list[float]):
    """A coroutine function that runs ``await op()`` until ``seconds`` from now have passed,
    timing each; it awaits nothing but ``op``, so trio and asyncio tasks both run it."""
    clock = time.perf_counter
    until = clock() + seconds

    async def worker() -> None:
        while True:
            started = clock()
            if started >= until:
                return
            await op()
            latencies.append(clock() - started)

    return worker


async def trio_measure(op, tasks: int, seconds: float) -> dict:
    """``tasks`` trio tasks each run ``await op()`` until ``seconds`` have passed."""
    import trio

    latencies: list[float] = []
    worker = _worker(op, seconds, latencies)
    before = snapshot()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return summarize(before, snapshot(), latencies)


async def asyncio_measure(op, tasks: int, seconds: float) -> dict:
    """The same as :func:`trio_measure` with asyncio tasks."""
    latencies: list[float] = []
    worker = _worker(op, seconds, latencies)
    before = snapshot()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return summarize(before, snapshot(), latencies)


def tasks_for(workload: str, args) -> int:
    return 1 if workload.endswith(("_1", "_idle")) else args.tasks


def echo_port(workload: str, args) -> int:
    return args.echo_idle_port if workload.endswith("_idle") else args.echo_port


async def trio_echo_op_factory(port: int, tasks: int):
    """Per task, an operation: 64 bytes to the echo process and back (one stream per task)."""
    import trio

    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(tasks)]
    free = list(streams)

    async def op() -> None:
        stream = free.pop()
        try:
            await stream.send_all(PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += len(await stream.receive_some(65536))
        finally:
            free.append(stream)

    async def close() -> None:
        for stream in streams:
            await stream.aclose()

    return op, close


async def asyncio_echo_op_factory(port: int, tasks: int):
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(tasks)]
    free = list(pairs)

    async def op() -> None:
        reader, writer = free.pop()
        try:
            writer.write(PAYLOAD)
            await reader.readexactly(len(PAYLOAD))
        finally:
            free.append((reader, writer))

    async def close() -> None:
        for _, writer in pairs:
            writer.close()

    return op, close


async def run_workloads(workloads, cross, pools: dict, args, echo_op_factory, measure) -> dict:
    """Every workload given, in one framework: ``cross(coro)`` is the variant's crossing,
    ``echo_op_factory`` and ``measure`` the framework's (trio's or asyncio's)."""
    results = {}
    for workload in workloads:
        tasks = tasks_for(workload, args)
        if workload.startswith("trio_io"):
            op, close = await echo_op_factory(echo_port(workload, args), tasks)
        else:
            make = unit_for(workload, pools)

            async def op(make=make):
                await cross(make())

            close = None
        if args.warmup > 0:
            await measure(op, tasks, args.warmup)
        results[workload] = await measure(op, tasks, args.seconds)
        if close is not None:
            await close()
    return results


async def trio_workloads(cross, pools: dict, args) -> dict:
    """Every workload of this cell, from trio; ``cross(coro)`` is the variant's crossing."""
    return await run_workloads(args.workloads, cross, pools, args, trio_echo_op_factory, trio_measure)


# --------------------------------------------------------------------------- one cell (a subprocess)


def cell_loop_thread(args) -> dict:
    import trio

    from storage.loop_thread import LoopThread

    async def main() -> dict:
        thread = LoopThread(name="guest-bench-db")
        thread.start()
        try:
            pools = await thread.run(make_pools(args.dsn, args.pool))
            try:
                return await trio_workloads(thread.run, pools, args)
            finally:
                await thread.run(close_pools(pools))
        finally:
            thread.stop()

    return trio.run(main)


def cell_guest(args) -> dict:
    import trio
    import uvloop

    _count_helper_trips()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pools = loop.run_until_complete(make_pools(args.dsn, args.pool))
        crossing = GuestCrossing(loop)
        done: asyncio.Future = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_workloads, crossing.run, pools, args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        results = loop.run_until_complete(done).unwrap()
        loop.run_until_complete(close_pools(pools))
        return results
    finally:
        loop.close()


def cell_asyncio(args) -> dict:
    import uvloop

    async def direct(coro):
        return await coro

    async def main() -> dict:
        pools = await make_pools(args.dsn, args.pool)
        try:
            # No-op workloads are left out: nothing crosses, so a plain await would never suspend.
            return await run_workloads([w for w in args.workloads if not w.startswith("noop")], direct, pools,
                                       args, asyncio_echo_op_factory, asyncio_measure)
        finally:
            await close_pools(pools)

    return uvloop.run(main())


CELLS = {"loop_thread": cell_loop_thread, "guest": cell_guest, "asyncio": cell_asyncio}


# --------------------------------------------------------------------------- the run


def _echo_server() -> tuple[subprocess.Popen, int, int]:
    """The echo process: (it, its port, the port of its echo that answers after IDLE_REPLY_S)."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(IDLE_REPLY_S)], stdout=subprocess.PIPE,
                            text=True)
    port, idle_port = map(int, proc.stdout.readline().split())
    return proc, port, idle_port


def _cell_command(variant: str, dsn: str, port: int, idle_port: int, args) -> list[str]:
    return [sys.executable, __file__, "--cell", variant, "--dsn", dsn, "--echo-port", str(port),
            "--echo-idle-port", str(idle_port),
            "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--tasks", str(args.tasks),
            "--pool", str(args.pool), "--workloads", *args.workloads]


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(results: dict[str, dict[str, list[dict]]], args) -> str:
    """One row per workload and variant: medians over rounds, CPU also as a ratio to ``loop_thread``."""
    lines = ["| workload | variant | ops/s | CPU µs/op | ÷ loop_thread | off main thread | vol. ctx sw/op"
             " | helper trips/op | p50 ms | p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for workload in args.workloads:
        base = _median(results.get("loop_thread", {}).get(workload, []), "cpu_us")
        for variant in args.variants:
            rows = results.get(variant, {}).get(workload, [])
            if not rows:
                continue
            cpu = _median(rows, "cpu_us")
            off = _median(rows, "off_main")
            ratio = f"{cpu / base:.2f}" if base else "—"
            trips = f"{_median(rows, 'trips'):.2f}" if variant == "guest" else "—"
            lines.append(
                f"| {workload} (×{tasks_for(workload, args)}) | {variant} | {_median(rows, 'ops_s'):,.0f} | {cpu:.1f}"
                f" | {ratio} | {'—' if off is None else f'{off:.0%}'} | {_median(rows, 'vcsw'):.2f} | {trips}"
                f" | {_median(rows, 'p50_ms'):.3f} | {_median(rows, 'p99_ms'):.2f} |")
    return "\n".join(lines)


def per_round(results: dict[str, dict[str, list[dict]]], args) -> str:
    """CPU µs per operation of every round (the spread behind the medians)."""
    lines = ["| workload | " + " | ".join(args.variants) + " |", "|---|" + "---:|" * len(args.variants)]
    for workload in args.workloads:
        cells = []
        for variant in args.variants:
            rows = results.get(variant, {}).get(workload, [])
            cells.append(" / ".join(f"{r['cpu_us']:.1f}" for r in rows) or "—")
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(args, summary: str, rounds: str) -> None:
    from bench.common import RESULTS, load_average, machine_line

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = shlex.join([".venv/bin/python", "bench/guest_mode.py", *sys.argv[1:]])
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        rev = "?"
    text = [f"## {when} — guest_mode.py (issue 22: trio as a guest on uvloop vs the loop thread)", "",
            f"- command: `{command}` (at {rev})",
            f"- machine: {machine_line()}; load average at the end: {load_average()}",
            f"- {args.tasks} tasks, pool of {args.pool} per kind, {args.seconds:g} s per cell after {args.warmup:g} s"
            f" warm-up, {args.rounds} rounds (variants rotated, a fresh process per cell); medians over rounds;"
            " embedded PostgreSQL in a temp dir",
            *([f"- note: {args.note}"] if args.note else []), "", summary, "",
            "CPU µs per operation, every round:", "", rounds, "", ""]
    with RESULTS.open("a") as f:
        f.write("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4, help="measured seconds per workload and cell (4)")
    parser.add_argument("--warmup", type=float, default=1, help="unmeasured seconds before each (1)")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks (32; noop_1 uses 1)")
    parser.add_argument("--pool", type=int, default=10, help="connections per pool (10, the product's default)")
    parser.add_argument("--rounds", type=int, default=3, help="cells per variant, order rotated (3)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="loop_thread guest asyncio (default: all)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--dsn", help="use this PostgreSQL (default: an embedded one in a temp dir)")
    parser.add_argument("--no-save", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--note", default="", help="one line saved with the results")
    parser.add_argument("--cell", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--echo-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--echo-idle-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cell:
        print(json.dumps(CELLS[args.cell](args)), flush=True)
        return 0

    tmp = pg = None
    echo = None
    dsn = args.dsn
    try:
        if not dsn:
            from bench.common import embedded_postgres

            tmp = tempfile.mkdtemp(prefix="paycast-guest-mode-", dir="/tmp")
            pg = embedded_postgres(pathlib.Path(tmp), "guest_bench")
            dsn = pg.dsn("guest_bench")
        echo, port, idle_port = _echo_server()
        results: dict[str, dict[str, list[dict]]] = {v: {w: [] for w in args.workloads} for v in args.variants}
        for r in range(args.rounds):
            order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
            for variant in order:
                out = subprocess.run(_cell_command(variant, dsn, port, idle_port, args), capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    raise SystemExit(f"cell {variant} failed (exit {out.returncode})")
                cell = json.loads(out.stdout.strip().splitlines()[-1])
                for workload, row in cell.items():
                    results[variant][workload].append(row)
                    print(f"round {r + 1} {variant:11} {workload:9} {row['ops_s']:10,.0f}/s  {row['cpu_us']:7.1f} µs CPU"
                          f"  vcsw {row['vcsw']:.2f}  trips {row['trips']:.2f}  p50 {row['p50_ms']:.3f} ms"
                          f"  p99 {row['p99_ms']:.2f} ms", flush=True)
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        if pg is not None:
            pg.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    summary, rounds = table(results, args), per_round(results, args)
    print(summary)
    print(rounds)
    if not args.no_save:
        save(args, summary, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
