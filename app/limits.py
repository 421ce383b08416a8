"""ASGI middleware for oversized bodies.

Quart refuses a body over ``MAX_CONTENT_LENGTH`` before reading it, and an
HTTP/1.1 client that is still uploading (httpx, most SDKs) never reads the
early 413: both sides wait until a timeout. So a declared oversized body is
drained here first (up to a cap, then the connection is dropped) and answered
413 with the contract's (docs/api.md) error body.
"""

from __future__ import annotations

import json

from app.body import send_json
from app.errors import body_too_large

# Request headers beyond these are refused with 431: no client of this API
# needs more, and every header is parsed and kept for the whole request.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
_HEADERS_BODY = json.dumps({"error": {"type": "invalid_request_error", "code": "headers_too_large",
                                      "message": "The request headers are too large.", "param": None}}).encode()
# Beyond this much we stop being polite and let the connection close.
_DRAIN_CAP = 64 * 1024 * 1024
_BODY = json.dumps(body_too_large().to_dict()).encode()


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send, status: int, body: bytes) -> None:
    await send_json(send, status, body, [(b"connection", b"close")])


class BodyLimit:
    """Wraps an ASGI app; answers 431 for oversized headers and 413 for declared
    bodies over ``limit`` bytes."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = scope.get("headers", ())
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return None
            return await _refuse(send, 431, _HEADERS_BODY)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _declared_length(scope)
        if length is None or length <= self.limit:
            return await self.app(scope, receive, send)
        if length <= _DRAIN_CAP:
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
        await _refuse(send, 413, _BODY)
