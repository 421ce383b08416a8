"""Open-loop HTTP/1.1 request sender: prepared requests at a fixed rate over
keep-alive connections, in its own process.

The latency benchmark's webhooks used to be sent by the orchestrator with
httpx, which spent most of a core at 300 requests/s on this 2-core machine and
so was the bound (its own queueing showed up as server latency). Here the
requests are built and signed in advance by the caller and written as raw
bytes on plain asyncio streams: per request one write and one read of the
response head and body, a few tens of µs of CPU.

    python bench/http_load.py HOST PORT REQUESTS_FILE --rate 300 --connections 64

``REQUESTS_FILE`` holds one request per line: the raw HTTP/1.1 request
(``Connection: keep-alive``, with ``Content-Length``), JSON-encoded as a string.
Request ``i`` is due at ``start + i / rate`` (open loop: a slow response never
delays the schedule; it only holds its connection, and a request waits for a
free one). Prints one JSON object: ``sent`` (unix time each request was
written, by index), ``ack_ms`` (response times, by index), ``statuses`` (count
per HTTP status), ``late_ms`` (p99 of how late requests were written against
their schedule: the sender's own lag) and ``cpu_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time


async def _send(i: int, request: bytes, pool: asyncio.Queue, out: dict) -> None:
    reader, writer = await pool.get()
    try:
        out["sent"][i] = time.time()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        out["ack_ms"][i] = (time.time() - out["sent"][i]) * 1000
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
    finally:
        pool.put_nowait((reader, writer))


async def run(host: str, port: int, requests: list[bytes], rate: float, connections: int) -> dict:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    out: dict = {"sent": {}, "ack_ms": {}, "statuses": {}}
    loop = asyncio.get_running_loop()
    late: list[float] = []
    tasks = []
    start = loop.time() + 0.1
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(0.0, loop.time() - due) * 1000)
        tasks.append(asyncio.create_task(_send(i, request, pool, out)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    late.sort()
    out["late_ms"] = late[int(0.99 * (len(late) - 1))] if late else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("requests_file")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    args = parser.parse_args(argv)
    with open(args.requests_file) as f:
        requests = [json.loads(line).encode("latin-1") for line in f if line.strip()]
    try:
        from uvloop import run as run_loop
    except ImportError:  # pragma: no cover - plain asyncio works too
        run_loop = asyncio.run
    out = run_loop(run(args.host, args.port, requests, args.rate, args.connections))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
