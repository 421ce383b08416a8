"""app/trio_edge.py: hypercorn's trio worker with the cheaper socket layer keeps hypercorn's behaviour.

A bare ASGI app served in process by ``hypercorn.trio.serve`` with the adapter
installed, driven over real sockets: the keep-alive timeout (now a read deadline)
closes an idle connection and only an idle one; graceful shutdown closes idle
connections at once and lets a request in flight finish; writes the kernel does
not take at once (a large body) and request bodies larger than hypercorn's app
queue arrive whole; pipelined requests are answered in order.
"""

from __future__ import annotations

import logging

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio import serve

from app import trio_edge

BIG = 4 * 1024 * 1024  # far beyond a loopback socket's send buffer: partial writes


@pytest.fixture(autouse=True)
def installed():
    original = hypercorn_trio_run.TCPServer
    assert trio_edge.install()
    assert getattr(hypercorn_trio_run.TCPServer, "_paycast_edge", False)
    yield
    hypercorn_trio_run.TCPServer = original


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await trio.sleep(0.5)
    if scope["path"] == "/stream":  # a response in several body messages, the first one late
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await trio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await trio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"b"})
        return
    if scope["path"] == "/fail":  # a response begun, then the app fails: the head goes out, then the connection closes
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        raise RuntimeError("the app fails mid-response")
    answer = b"x" * BIG if scope["path"] == "/big" else b"%d:%s" % (len(body), scope["path"].encode())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def config(keep_alive_s: float = 5) -> Config:
    c = Config()
    c.bind = ["127.0.0.1:0"]
    c.accesslog = None
    c.errorlog = logging.getLogger("hypercorn.error")
    c.keep_alive_timeout = keep_alive_s
    c.graceful_timeout = 10
    return c


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def request(self, path: str, body: bytes = b"") -> None:
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        await self.stream.send_all(head + body)

    async def response(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            assert chunk, "closed before a response"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(self.buffer) < length:
            chunk = await self.stream.receive_some(1 << 20)
            assert chunk, "closed mid-response"
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    async def closed_by_server(self) -> bool:
        return await self.stream.receive_some(100) == b""


async def start(nursery, keep_alive_s: float = 5):
    shutdown = trio.Event()
    binds = await nursery.start(lambda task_status: serve(app, config(keep_alive_s), mode="asgi",
                                                          shutdown_trigger=shutdown.wait, task_status=task_status))
    host, port = binds[0].removeprefix("http://").rsplit(":", 1)
    return shutdown, host, int(port)


async def connect(host: str, port: int) -> Client:
    return Client(await trio.open_tcp_stream(host, port))


async def test_idle_connection_is_closed_after_keep_alive_timeout_and_a_busy_one_is_not():
    async with trio.open_nursery() as nursery:
        shutdown, host, port = await start(nursery, keep_alive_s=0.4)
        busy, idle = await connect(host, port), await connect(host, port)
        await idle.request("/a")
        assert await idle.response() == b"0:/a"
        for i in range(6):  # 1.2 s of requests 0.2 s apart: each resets the timer
            await busy.request(f"/{i}")
            assert await busy.response() == f"0:/{i}".encode()
            await trio.sleep(0.2)
        with trio.fail_after(2):
            assert await idle.closed_by_server()
        await busy.request("/slow")  # longer than the keep-alive timeout, but not idle
        assert await busy.response() == b"0:/slow"
        shutdown.set()


async def test_a_never_used_connection_is_closed_after_keep_alive_timeout():
    async with trio.open_nursery() as nursery:
        shutdown, host, port = await start(nursery, keep_alive_s=0.3)
        client = await connect(host, port)
        with trio.fail_after(2):
            assert await client.closed_by_server()
        shutdown.set()


async def test_graceful_shutdown_closes_idle_connections_at_once_and_finishes_a_request_in_flight():
    async with trio.open_nursery() as nursery:
        shutdown, host, port = await start(nursery, keep_alive_s=60)
        idle, working = await connect(host, port), await connect(host, port)
        await idle.request("/a")
        await idle.response()
        await working.request("/slow")
        await trio.sleep(0.1)
        shutdown.set()
        with trio.fail_after(2):
            assert await idle.closed_by_server()
            assert await working.response() == b"0:/slow"
            assert await working.closed_by_server()


async def test_large_bodies_both_ways_and_pipelined_requests():
    async with trio.open_nursery() as nursery:
        shutdown, host, port = await start(nursery)
        client = await connect(host, port)
        with trio.fail_after(10):
            await client.request("/big")
            assert await client.response() == b"x" * BIG
            upload = b"y" * (3 * 1024 * 1024)  # many chunks: hypercorn's app queue (10) fills up
            await client.request("/up", upload)
            assert await client.response() == b"%d:/up" % len(upload)
            await client.request("/stream")
            assert await client.response() == b"ab"
            for path in ("/p1", "/p2", "/p3"):
                await client.request(path)
            assert [await client.response() for _ in range(3)] == [b"0:/p1", b"0:/p2", b"0:/p3"]
        shutdown.set()


async def test_a_response_begun_then_abandoned_sends_its_head_and_closes():
    async with trio.open_nursery() as nursery:
        shutdown, host, port = await start(nursery)
        client = await connect(host, port)
        with trio.fail_after(5):
            await client.request("/fail")
            received = b""
            while chunk := await client.stream.receive_some(65536):
                received += chunk
            assert received.startswith(b"HTTP/1.1 200")
        shutdown.set()
