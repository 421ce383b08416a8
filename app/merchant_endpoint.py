"""The merchant's hot POSTs, served at the ASGI level in front of Quart:
``POST /v1/payments``, ``POST /v1/payments/{id}/confirm|capture|cancel`` and
``POST /v1/refunds``.

Why: they are the requests every payment makes, and Quart's request handling
(request and response objects, werkzeug headers, contexts, URL matching,
dispatch, signals) was ~40 % of their HTTP layer's CPU (bench/RESULTS.md "The
merchant hot routes"). The request is the same as through Quart, byte for byte
(tests/e2e/test_merchant_endpoint.py): :func:`app.merchant_posts.serve_post`
runs the same handler behind the same API key, rate limit and
``Idempotency-Key``; :mod:`app.asgi_routes` does what Quart's hooks do (request
id, log context, span name, NUL check, body limits, error objects, metrics under
Quart's route templates). A request whose client goes away is cancelled as
Quart's are (:data:`app.deadline.CANCEL_ON_DISCONNECT`). Other methods and paths
go on to Quart (the reads, 404, 405).
"""

from __future__ import annotations

from app.asgi_routes import AsgiHeaders, answer, read_body
from app.body import Reply
from app.deadline import CANCEL_ON_DISCONNECT
from app.merchant_keys import MerchantKeys
from app.merchant_posts import HotPost, serve_post
from app.routes import payments, refunds
from components import Components
from telemetry.app_metrics import Metrics

PAYMENT_PREFIX = "/v1/payments/"
# path → (route template, handler) for the paths without an id
_FIXED: dict[str, tuple[str, HotPost]] = {
    "/v1/payments": ("/v1/payments", payments.create),
    "/v1/refunds": ("/v1/refunds", refunds.create),
}
# action → (route template, handler) for /v1/payments/<payment_id>/<action>
_ACTIONS: dict[str, tuple[str, HotPost]] = {
    action: (f"/v1/payments/<payment_id>/{action}", handler)
    for action, handler in (("confirm", payments.confirm), ("capture", payments.capture),
                            ("cancel", payments.cancel))
}


class MerchantEndpoint:
    """ASGI middleware: the merchant's hot POSTs served here, everything else to ``app``.

    Args:
      app: the next ASGI app (Quart).
      components: the process's components.
      keys: the API-key lookup and rate limits, shared with Quart's routes.
      metrics: the app's :class:`telemetry.app_metrics.Metrics`.
      max_body: the body limit in bytes (``PAYCAST_MAX_BODY_BYTES``).
    """

    def __init__(self, app, components: Components, keys: MerchantKeys, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.components = components
        self.keys = keys
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        payment_id = None
        found = _FIXED.get(path)
        if found is None and path.startswith(PAYMENT_PREFIX):
            payment_id, _, action = path[len(PAYMENT_PREFIX):].partition("/")
            found = _ACTIONS.get(action) if payment_id else None
        if found is None:
            return await self.app(scope, receive, send)
        route, handler = found
        scope[CANCEL_ON_DISCONNECT] = True
        body: list[bytes] = []

        async def read() -> bytes:  # read once: hashed for Idempotency-Key, then parsed
            if not body:
                body.append(await read_body(receive, self.max_body))
            return body[0]

        async def work() -> Reply:
            headers = AsgiHeaders(scope.get("headers", ()))
            args = (payment_id,) if payment_id else ()
            return await serve_post(self.components, self.keys, headers, "POST", path, read, handler, *args)

        await answer(scope, send, self.metrics, route, work, payment_id=payment_id)
