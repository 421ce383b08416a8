"""``GET /v1/realtime``: the WebSocket, served at the ASGI level in front of Quart.

Why not a Quart route: an idle connection is what a realtime gateway holds
most of, and through Quart each one also carried Quart's websocket object,
its request and app contexts and a task copying hypercorn's queue into
Quart's (half as much memory again per idle connection; bench/RESULTS.md
"Measurements cited by the code"). Here the
connection actor reads hypercorn's queue itself and writes through
hypercorn's stream (:mod:`app.realtime_socket`).

The handshake is refused with an HTTP answer (the ASGI
``websocket.http.response`` extension, which hypercorn supports) before any
frame flows when the token is missing or bad (401 ``invalid_token``), expired
(401 ``token_expired``) or issued for a device before it was deleted (401
``token_revoked``), when ``after_seq`` is malformed (400) or when the database
cannot be read (503); the body is the API's error object. A server without the
extension gets a close with 1008 instead.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs

import orjson

from app.body import send_json
from app.errors import internal_error, status_of
from actors.realtime.gateway import RealtimeGateway
from app.realtime_socket import AsgiSocket
from domain.errors import InvalidRequest, PaycastError

log = logging.getLogger("paycast.realtime")
PATH = "/v1/realtime"
_SEQ = re.compile(r"^[0-9]{1,18}$")


class RealtimeEndpoint:
    """ASGI middleware: ``/v1/realtime`` WebSockets to the gateway, everything else to ``app``.

    Args:
      app: the next ASGI app (Quart).
      gateway: the process's realtime gateway (``Components.realtime``).
    """

    def __init__(self, app, gateway: RealtimeGateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH:
            return await _not_a_websocket(send)
        if scope["type"] != "websocket" or scope["path"] != PATH:
            return await self.app(scope, receive, send)
        if (await receive())["type"] != "websocket.connect":
            return None  # gone before the handshake
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        raw_after = query.get("after_seq", [None])[0]
        try:
            if raw_after is not None and not _SEQ.match(raw_after):
                raise InvalidRequest("after_seq must be a non-negative integer.", param="after_seq")
            after_seq = int(raw_after) if raw_after is not None else None
            claims = await self.gateway.verify(query.get("token", [""])[0])
            conn = await self.gateway.open(claims, after_seq)
        except PaycastError as exc:
            return await _refuse(scope, send, exc)
        except Exception:  # noqa: BLE001 - a bug refuses this handshake, not the server
            log.exception("realtime handshake failed")
            return await _refuse(scope, send, internal_error())
        try:
            await send({"type": "websocket.accept"})
        except BaseException:
            self.gateway.forget(conn)
            raise
        await self.gateway.serve(conn, AsgiSocket(receive, send), after_seq)


async def _not_a_websocket(send) -> None:
    """A plain HTTP request to the WebSocket's URL: 400, as werkzeug's WebSocket-only rule answered."""
    body = orjson.dumps(InvalidRequest("This URL is a WebSocket: connect with an Upgrade: websocket "
                                       "request (GET /v1/realtime?token=...).").to_dict())
    await send_json(send, 400, body)


async def _refuse(scope, send, exc: PaycastError) -> None:
    """Answer the handshake with the error's HTTP status and body (or close with 1008)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send_json(send, status_of(exc), orjson.dumps(exc.to_dict()), kind="websocket.http")
