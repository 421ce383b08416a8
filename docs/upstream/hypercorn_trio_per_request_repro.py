"""hypercorn's trio worker: scheduler trips, tasks and CPU per keep-alive request, against its asyncio worker.

    python hypercorn_trio_per_request_repro.py                  # trio and asyncio, 4,000 requests each
    python hypercorn_trio_per_request_repro.py --requests 20000

One bare ASGI app (200 ``ok``), served in the main thread; plain blocking clients in
threads (8 keep-alive connections, one request at a time each). Reported per request:
the server thread's CPU (``RUSAGE_THREAD``) and, for trio, what a trio Instrument counts
(tasks spawned, task steps = trips through the scheduler). Needs hypercorn and trio
(and uvloop, optional, for the asyncio worker).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import threading

import trio
from hypercorn.config import Config

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def clients(port: int, requests: int, connections: int) -> None:
    def one(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(n):
                sock.sendall(REQUEST)
                buffer = b""
                while not buffer.endswith(b"\r\n\r\nok"):
                    buffer += sock.recv(4096)

    threads = [threading.Thread(target=one, args=(requests // connections,)) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def config(port: int) -> Config:
    c = Config()
    c.bind = [f"127.0.0.1:{port}"]
    c.accesslog = None
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Count(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = self.steps = 0

    def task_spawned(self, task) -> None:
        self.spawned += 1

    def before_task_step(self, task) -> None:
        self.steps += 1


def run_trio(requests: int, connections: int) -> dict:
    from hypercorn.trio import serve

    port, count, out = free_port(), Count(), {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(app, config(port), task_status=task_status))
            done = threading.Event()
            threading.Thread(target=lambda: (clients(port, requests, connections), done.set())).start()
            steps, spawned, cpu = count.steps, count.spawned, thread_cpu()
            while not done.is_set():
                await trio.sleep(0.05)
            out.update(cpu=thread_cpu() - cpu, steps=count.steps - steps, spawned=count.spawned - spawned)
            nursery.cancel_scope.cancel()

    trio.run(main, instruments=[count])
    return out


def run_asyncio(requests: int, connections: int) -> dict:
    from hypercorn.asyncio import serve

    port, out = free_port(), {}

    async def main() -> None:
        stop = asyncio.Event()
        server = asyncio.ensure_future(serve(app, config(port), shutdown_trigger=stop.wait))
        await asyncio.sleep(0.5)
        done = threading.Event()
        threading.Thread(target=lambda: (clients(port, requests, connections), done.set())).start()
        cpu = thread_cpu()
        while not done.is_set():
            await asyncio.sleep(0.05)
        out.update(cpu=thread_cpu() - cpu)
        stop.set()
        await server

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    t = run_trio(args.requests, args.connections)
    a = run_asyncio(args.requests, args.connections)
    n = args.requests // args.connections * args.connections
    print(f"trio worker:    {t['cpu'] / n * 1e6:6.0f} µs CPU/request  {t['spawned'] / n:.2f} tasks spawned/request"
          f"  {t['steps'] / n:.1f} task steps/request")
    print(f"asyncio worker: {a['cpu'] / n * 1e6:6.0f} µs CPU/request")


if __name__ == "__main__":
    main()
