"""What every route served at the ASGI level, in front of Quart, does around its work —
the same as Quart's hooks do for its routes (app/server.py): the request id
(``Request-Id``), the log context, the trace span named after the route, the NUL
check of the URL, the body bounded in size and time, the contract's error
objects (a bug is a logged 500, never a dropped connection), the request metrics.

Used by :class:`app.webhooks_endpoint.WebhooksEndpoint` (gateway webhooks) and
:class:`app.merchant_endpoint.MerchantEndpoint` (the merchant's hot POSTs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

import trio

from app.body import Reply, send_json
from app.errors import body_timeout, body_too_large, error_reply, internal_error
from app.request_ids import request_id_of
from domain.errors import InvalidRequest, PaycastError
from telemetry import logs
from telemetry.app_metrics import Metrics
from telemetry.http import name_after_route

log = logging.getLogger("paycast.http")
# As Quart's BODY_TIMEOUT: a sender that stalls mid-body is answered 408.
BODY_TIMEOUT_S = 30


class AsgiHeaders:
    """Case-insensitive ``get`` over ASGI headers (an :class:`app.body.Headers`)."""

    __slots__ = ("_raw",)

    def __init__(self, raw) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self._raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default


async def read_body(receive, max_body: int) -> bytes:
    """The whole body, at most ``max_body`` bytes.

    Raises:
      BodyTooLarge: more than ``max_body`` bytes.
      InvalidRequest: (408) the sender stalled mid-body.
    """
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_TIMEOUT_S) as scope:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; whatever came is judged as is
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise body_too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    if scope.cancelled_caught:
        raise body_timeout()
    return b"".join(chunks)


async def answer(scope, send, metrics: Metrics, route: str, work: Callable[[], Awaitable[Reply]], *,
                 payment_id: str | None = None) -> None:
    """Run ``work`` for the request of ``scope`` and send its reply.

    Args:
      route: the route's template, as Quart names it (``/v1/payments/<payment_id>/confirm``).
      work: the request's work; a :class:`PaycastError` it raises is answered as the error.
      payment_id: the payment in the path, for the log context.
    """
    started = time.perf_counter()
    method = scope["method"]
    request_id = request_id_of(scope)
    logs.request_id.set(request_id)
    logs.merchant_id.set(None)
    logs.payment_id.set(payment_id)
    name_after_route(method, route)
    try:
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            raise InvalidRequest("NUL characters are not allowed in the URL.")
        reply = await work()
    except PaycastError as exc:
        reply = error_reply(exc)
    except Exception:  # noqa: BLE001 - one request's bug is a 500, never a dropped connection
        log.exception("unhandled error")
        reply = error_reply(internal_error())
    headers = [(b"request-id", request_id.encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    await send_json(send, reply.status, reply.body, headers)
    elapsed = time.perf_counter() - started
    metrics.observe_request(method, route, reply.status, elapsed)
    log.debug("%s %s → %s in %.1f ms", method, route, reply.status, elapsed * 1000)  # as Quart's requests
