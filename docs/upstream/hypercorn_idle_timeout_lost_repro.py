"""hypercorn (trio worker) never re-arms keep_alive_timeout after a response whose final send
is cancelled by the app's own disconnect watcher. Run: python hypercorn_idle_timeout_lost_repro.py"""
import socket, threading, time

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


async def app(scope, receive, send):
    # The usual structure (quart-trio's TrioASGIHTTPConnection): one task watches for
    # http.disconnect and cancels the request's nursery; the other answers — here at
    # once, from the head (a 405), without waiting for the body.
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    async with trio.open_nursery() as nursery:
        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()
        nursery.start_soon(watch)
        await send({"type": "http.response.start", "status": 405, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})
        nursery.cancel_scope.cancel()


def client(port):
    kept = 0
    for attempt in range(5):
        s = socket.create_connection(("127.0.0.1", port)); s.settimeout(4)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")   # head and body together
        first = s.recv(65536)
        while not first.endswith(b"no"):
            first += s.recv(65536)
        t = time.monotonic()
        try:
            closed = s.recv(65536) == b""
        except TimeoutError:
            closed = False
        kept += not closed
        print(attempt, first.split(b"\r\n")[0], "closed by keep_alive_timeout=1s" if closed else "still open after 4 s", round(time.monotonic()-t, 2))
        s.close()

async def main():
    config = Config(); config.bind = ["127.0.0.1:0"]; config.keep_alive_timeout = 1
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        await trio.to_thread.run_sync(client, port)
        nursery.cancel_scope.cancel()

trio.run(main)
