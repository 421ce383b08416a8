"""``POST /webhooks/{connector}`` and ``POST /webhooks/{connector}/{mca_id}``, served at the
ASGI level in front of Quart.

Why: gateway webhooks are the busiest machine-facing request, and what Quart
adds to each (request and app contexts, werkzeug's URL matching, response
objects, before/after hooks) is CPU on every request (bench/RESULTS.md
"Measurements cited by the code"), plus a reference cycle per request from
werkzeug's matcher (a recursive closure), garbage for the cycle collector whose pauses set the realtime
latency's tail. The request is the same (:mod:`app.asgi_routes`): body bounded
by the body limit, the API's error objects, ``Request-Id``, the request metrics
under the route ``/webhooks/<connector>`` (or ``/webhooks/<connector>/<mca_id>``),
the trace span named after it. What it does is :func:`app.routes.webhooks.ingest`
(or ``ingest_for_account``); other methods and paths go on to Quart (405, 404).
"""

from __future__ import annotations

from app.asgi_routes import AsgiHeaders, answer, read_body
from app.body import Reply, json_reply
from app.routes.webhooks import ingest, ingest_for_account
from components import Components
from telemetry.app_metrics import Metrics

PREFIX = "/webhooks/"
ROUTE = "/webhooks/<connector>"
ACCOUNT_ROUTE = "/webhooks/<connector>/<mca_id>"


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

        async def work() -> Reply:
            raw = await read_body(receive, self.max_body)
            headers = AsgiHeaders(scope.get("headers", ()))
            if len(parts) == 1:
                return json_reply(await ingest(self.components, parts[0], raw, headers))
            return json_reply(await ingest_for_account(self.components, parts[0], parts[1], raw, headers))

        await answer(scope, send, self.metrics, ROUTE if len(parts) == 1 else ACCOUNT_ROUTE, work)
