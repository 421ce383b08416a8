"""``POST /webhooks/{connector}`` and ``POST /webhooks/{connector}/{mca_id}``, served at the
ASGI level in front of Quart.

Why: gateway webhooks are the busiest machine-facing request, and what Quart
adds to each (request and app contexts, werkzeug's URL matching, response
objects, before/after hooks) is CPU on every request (bench/RESULTS.md
"Measurements cited by the code"), plus a reference cycle per request from
werkzeug's matcher (a recursive closure), garbage for the cycle collector whose pauses set the realtime
latency's tail. The request is the same: body bounded by the body limit, the
API's error objects, ``Request-Id`` (from ``X-Request-Id`` when given), the
request metrics under the route ``/webhooks/<connector>`` (or
``/webhooks/<connector>/<mca_id>``), the trace span named after it. What
it does is :func:`app.routes.webhooks.ingest` (or ``ingest_for_account``);
other methods and paths go on to Quart (405, 404).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_to_bytes

import orjson
import trio

from app.body import send_json
from app.errors import body_too_large, internal_error, status_of
from app.request_ids import request_id_of
from app.routes.webhooks import ingest, ingest_for_account
from components import Components
from domain.errors import InvalidRequest, PaycastError
from telemetry import logs
from telemetry.app_metrics import Metrics
from telemetry.http import name_after_route

log = logging.getLogger("paycast.http")
PREFIX = "/webhooks/"
ROUTE = "/webhooks/<connector>"
ACCOUNT_ROUTE = "/webhooks/<connector>/<mca_id>"
# As Quart's BODY_TIMEOUT: a sender that stalls mid-body is answered 408.
BODY_TIMEOUT_S = 30


class _Headers:
    """Case-insensitive ``get`` over ASGI headers (what :func:`ingest` reads)."""

    __slots__ = ("_raw",)

    def __init__(self, raw) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self._raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default


class WebhooksEndpoint:
    """ASGI middleware: ``POST /webhooks/<connector>`` to the inbox, everything else to ``app``.

    Args:
      app: the next ASGI app (Quart).
      components: the process's components.
      metrics: the app's :class:`telemetry.app_metrics.Metrics` (request count and latency).
      max_body: the body limit in bytes (``PAYCAST_MAX_BODY_BYTES``).
    """

    def __init__(self, app, components: Components, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.components = components
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX) else []
        if scope["type"] != "http" or scope["method"] != "POST" or len(parts) not in (1, 2) or not all(parts):
            return await self.app(scope, receive, send)
        route = ROUTE if len(parts) == 1 else ACCOUNT_ROUTE
        started = time.perf_counter()
        headers = _Headers(scope.get("headers", ()))
        request_id = request_id_of(scope)
        logs.request_id.set(request_id)
        logs.merchant_id.set(None)
        logs.payment_id.set(None)
        name_after_route("POST", route)
        try:
            if "\x00" in path or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
                raise InvalidRequest("NUL characters are not allowed in the URL.")
            raw = await self._read_body(receive)
            if len(parts) == 1:
                status, body = 200, await ingest(self.components, parts[0], raw, headers)
            else:
                status, body = 200, await ingest_for_account(self.components, parts[0], parts[1], raw, headers)
        except PaycastError as exc:
            status, body = status_of(exc), exc.to_dict()
        except Exception:  # noqa: BLE001 - one request's bug is a 500, never a dropped connection
            log.exception("unhandled error")
            exc = internal_error()
            status, body = status_of(exc), exc.to_dict()
        await send_json(send, status, orjson.dumps(body), [(b"request-id", request_id.encode())])
        self.metrics.requests.labels("POST", route, str(status)).inc()
        self.metrics.latency.labels("POST", route).observe(time.perf_counter() - started)

    async def _read_body(self, receive) -> bytes:
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
                if size > self.max_body:
                    raise body_too_large()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if scope.cancelled_caught:
            err = InvalidRequest("The request body was not received in time.")
            err.status = 408
            raise err
        return b"".join(chunks)
