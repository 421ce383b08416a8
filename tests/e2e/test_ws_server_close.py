"""A WebSocket that hypercorn closes itself (a frame over its size limit, 1009)
ends its connection actor at once, not at the idle timeout, even when the peer
never answers the close and keeps its TCP connection open."""

from __future__ import annotations

import urllib.parse

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.realtime_support import http, token, ws_url


async def _connections(api, client_id: str) -> int:
    return (await api.get(f"/v1/realtime/clients/{client_id}")).json()["connections"]


async def test_oversized_frame_close_ends_the_connection_actor_at_once(server, api_key):
    # The session server's idle timeout is the default 60 s: anything under a
    # few seconds is the close itself, not the heartbeat reaping the actor.
    async with http(server, api_key) as api:
        tok = await token(api, "cus_oversized")
        url = urllib.parse.urlsplit(ws_url(server, tok))
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        conn = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(conn.send(Request(host=url.netloc, target=f"{url.path}?{url.query}")))
        events: list = []
        with trio.fail_after(10):
            while not any(isinstance(e, TextMessage) for e in events):  # accepted, then the welcome frame
                conn.receive_data(await stream.receive_some(65536))
                events.extend(conn.events())
        assert isinstance(events[0], AcceptConnection)
        assert await _connections(api, "cus_oversized") == 1
        await stream.send_all(conn.send(TextMessage(data="x" * 200_000)))
        with trio.fail_after(10):
            while not any(isinstance(e, CloseConnection) for e in events):
                conn.receive_data(await stream.receive_some(65536))
                events.extend(conn.events())
        assert next(e for e in events if isinstance(e, CloseConnection)).code == 1009
        # The peer neither answers the close nor leaves: the actor must end anyway.
        try:
            with trio.fail_after(5):
                while await _connections(api, "cus_oversized") != 0:
                    await trio.sleep(0.1)
        finally:
            await stream.aclose()
