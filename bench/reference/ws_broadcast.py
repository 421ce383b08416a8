"""A minimal broadcast server on the ``websockets`` library (asyncio): what a
team would write for "push one message to every connected client". The
realtime benchmark measures it in the same run as Paycast's gateway, with the
same load generator, as the reference for server CPU per delivered frame.

- ``ws://HOST:PORT/`` — each connection gets a hello frame, then every broadcast.
- ``GET /broadcast?n=N&bytes=B`` (plain HTTP) → 200 at once; N messages of a
  B-byte payload are then broadcast with ``websockets.broadcast`` (each
  message rendered once, as Paycast renders once), yielding to the loop
  between messages as messages arriving one by one would.
- ``GET /count`` → the number of open connections.

    python bench/reference/ws_broadcast.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        await ws.send('{"type":"welcome"}')
        async for _ in ws:  # pongs and anything else a client sends are ignored
            pass
    finally:
        CLIENTS.discard(ws)


async def _broadcast(n: int, size: int) -> None:
    for seq in range(1, n + 1):
        frame = json.dumps({"type": "event", "seq": seq, "topic": "client:all",
                            "event": {"type": "bench", "data": {"text": "x" * size}}}, separators=(",", ":"))
        broadcast(CLIENTS, frame)
        await asyncio.sleep(0)


def process_request(connection: ServerConnection, request):
    parts = urlsplit(request.path)
    if parts.path == "/broadcast":
        query = parse_qs(parts.query)
        asyncio.get_running_loop().create_task(_broadcast(int(query["n"][0]), int(query.get("bytes", ["100"])[0])))
        return connection.respond(HTTPStatus.OK, "ok\n")
    if parts.path == "/count":
        return connection.respond(HTTPStatus.OK, f"{len(CLIENTS)}\n")
    return None  # a WebSocket handshake


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, process_request=process_request, compression=None, ping_interval=None,
                     max_size=4096) as server:
        print(json.dumps({"listening": True, "port": port}), flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="websockets broadcast reference server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
