"""hypercorn (trio worker) loses a keep-alive connection when the app's last send is cancelled
by the app's own disconnect watcher. Run: python repro_hypercorn.py  (prints each attempt)."""
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
    hangs = 0
    for attempt in range(10):
        s = socket.create_connection(("127.0.0.1", port)); s.settimeout(1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")   # head ...
        time.sleep(0.03)
        s.sendall(b"{}")                                                        # ... then body (urllib3 does this)
        first = s.recv(65536)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")                          # next request, same connection
        try:
            second = s.recv(65536)
            print(attempt, first.split(b"\r\n")[0], "then", second.split(b"\r\n")[0] or b"<closed>")
        except TimeoutError:
            hangs += 1
            print(attempt, first.split(b"\r\n")[0], "then NO ANSWER (1 s)")
        s.close()
    print(f"{hangs}/10 next requests never answered")


async def main():
    config = Config(); config.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        await trio.to_thread.run_sync(client, port)
        nursery.cancel_scope.cancel()

trio.run(main)
