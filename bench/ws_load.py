"""WebSocket load generator: many ``websockets`` asyncio client connections in
one process, driven by JSON lines on stdin, answering on stdout.

It is a separate process from the benchmark's orchestrator (and from the
server), so its CPU is measured on its own and it can be shown not to be the
bound. The ``websockets`` asyncio client is used because it is much cheaper per
received frame than trio-websocket. Connections are made without
permessage-deflate (``compression=None``) for the server under test and the
reference alike.

Commands (one JSON object per line) and answers:

- ``{"cmd": "connect", "urls": [...], "concurrency": 200}`` → ``{"open", "failed", "seconds"}``;
  the first frame of each connection (the server's hello) must arrive.
- ``{"cmd": "expect", "n": N, "timeout": T}`` → ``{"armed": true}`` at once, then
  ``{"received", "first", "last", "cpu_s"}`` when N event frames arrived (or at the timeout).
- ``{"cmd": "watch", "match": "payment.succeeded"}`` → ``{"ok": true}``; from now on the
  wall time of the first frame containing ``match`` is kept per connection index.
- ``{"cmd": "times"}`` → ``{"times": {index: unix_time}}``.
- ``{"cmd": "close"}`` → ``{"closed": n}``, then the process exits.

Pings (``{"type":"ping"}``) are answered with pongs; event frames are those
starting with ``{"type":"event"``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

PING = '{"type":"ping"}'
PONG = '{"type":"pong"}'
EVENT_PREFIX = '{"type":"event"'


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    def __init__(self) -> None:
        self.conns: list = []
        self.received = 0
        self.target: int | None = None
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()
        self.match: str | None = None
        self.times: dict[int, float] = {}
        self.tasks: set[asyncio.Task] = set()

    async def connect_all(self, urls: list[str], concurrency: int) -> dict:
        limiter = asyncio.Semaphore(concurrency)
        failed = 0
        started = time.perf_counter()

        async def one(idx: int, url: str) -> None:
            nonlocal failed
            async with limiter:
                try:
                    ws = await asyncio.wait_for(connect(url, compression=None, max_size=None, ping_interval=None,
                                                        open_timeout=60), 90)
                    await asyncio.wait_for(ws.recv(), 60)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failed += 1
                    if failed <= 3:
                        print(f"connect failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    return
            self.conns.append(ws)
            task = asyncio.get_running_loop().create_task(self.pump(idx, ws))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
        return {"open": len(self.conns), "failed": failed, "seconds": time.perf_counter() - started}

    async def pump(self, idx: int, ws) -> None:
        try:
            async for msg in ws:
                if msg.startswith(EVENT_PREFIX):
                    now = time.perf_counter()
                    if self.received == 0:
                        self.first = now
                    self.received += 1
                    self.last = now
                    if self.match is not None and idx not in self.times and self.match in msg:
                        self.times[idx] = time.time()
                    if self.target is not None and self.received >= self.target:
                        self.done.set()
                elif msg == PING:
                    await ws.send(PONG)
        except ConnectionClosed:
            pass

    async def expect(self, n: int, timeout: float) -> dict:
        self.received, self.target, self.first, self.last = 0, n, 0.0, 0.0
        self.done = asyncio.Event()
        cpu0 = cpu_s()
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self.target = None
        return {"received": self.received, "first": self.first, "last": self.last, "cpu_s": cpu_s() - cpu0}

    async def close_all(self) -> int:
        n = len(self.conns)
        await asyncio.gather(*(asyncio.wait_for(ws.close(), 5) for ws in self.conns), return_exceptions=True)
        self.conns = []
        return n


def answer(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    load = Load()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)  # a connect line lists every URL
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task] = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "connect":
            answer(await load.connect_all(cmd["urls"], cmd.get("concurrency", 200)))
        elif kind == "expect":
            answer({"armed": True})

            async def report(n: int = cmd["n"], timeout: float = cmd.get("timeout", 60)) -> None:
                answer(await load.expect(n, timeout))

            task = loop.create_task(report())
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif kind == "watch":
            load.match, load.times = cmd["match"], {}
            answer({"ok": True})
        elif kind == "times":
            answer({"times": load.times})
        elif kind == "close":
            answer({"closed": await load.close_all()})
            break


if __name__ == "__main__":
    asyncio.run(main())
