"""The HTTP edge: the quart-trio app and its hypercorn server.

The app is thin: parse, authorise, ask an actor or run a query, render. It is
served by ``hypercorn.trio.serve`` inside *our* root nursery (not quart's
lifespan nursery), stopped through ``shutdown_trigger`` so in-flight requests
drain (hypercorn #106: cancelling the server closes sockets abruptly).
"""

from __future__ import annotations

import logging
import time

import trio
from hypercorn.trio import serve
from quart import Quart, g, request

from app import connection_teardown, errors, http_config, trio_edge
from app.deadline import RequestDeadline
from app.keepalive import CompleteExchange
from app.limits import BodyLimit
from app.merchant_endpoint import MerchantEndpoint
from app.merchant_keys import MerchantKeys
from app.request_ids import request_id_of
from app.context import PaycastApp
from app.realtime_endpoint import RealtimeEndpoint
from app.webhooks_endpoint import WebhooksEndpoint
from components import Components
from config.roles import Part, parts_of
from domain.errors import InvalidRequest
from telemetry import tracing
from app.routes import admin_inbox
from app.routes import (accounts, admin, clients, connector_accounts, connectors, dashboard, disputes, events, ops,
                        orders, payments, realtime, reconciliation, refunds, webhook_endpoints, webhooks)
from app.routes import stats as console_stats
from telemetry import logs
from telemetry.app_metrics import Metrics
from telemetry.http import TracingMiddleware, name_after_route

log = logging.getLogger("paycast.http")

# The routes of each part of the system; a process serves those of the parts
# its role runs (config/roles.py ROLE_PARTS), and every role has OPS.
ROUTES = {
    Part.OPS: (ops.bp, clients.bp),  # clients: /static/paycast-realtime.js (every role, see its docstring)
    Part.MERCHANT_HTTP: (admin.bp, admin_inbox.bp, orders.bp, payments.bp, events.bp, connectors.bp,
                         reconciliation.bp, refunds.bp, disputes.bp, accounts.bp, webhook_endpoints.bp, realtime.bp,
                         dashboard.bp, console_stats.bp, connector_accounts.bp),  # console_stats: the console's read endpoints (docs/console.md)
    Part.WEBHOOKS_IN: (webhooks.bp,),
    # Part.REALTIME's WebSocket is served in front of Quart (app/realtime_endpoint.py, asgi_edge).
}


def create_app(components: Components, admin_token: str) -> PaycastApp:
    """Build the app around the process's components.

    Args:
      components: a :class:`components.Components` (route listings pass an
        object with only ``settings``).
      admin_token: the bearer token of ``/admin`` and ``/debug``.

    Returns:
      The app; handlers reach the components through :func:`app.context.components`.
    """
    app = PaycastApp("paycast", static_folder=None)
    app.components = components
    app.merchant_keys = MerchantKeys(components)
    app.config["ADMIN_TOKEN"] = admin_token
    app.config["METRICS"] = metrics = Metrics(getattr(components, "db", None))  # route listings build an app without one
    app.config["MAX_CONTENT_LENGTH"] = components.settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    if components.settings.request_deadline_s:
        # The request deadline (app/deadline.py, 30 s) also bounds the response's sending, before
        # Quart's 60 s would: no second cancel scope per request (issue 22: ~19 µs CPU, bench/edge_layers.py).
        app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    parts = parts_of(components.settings.role)
    for part, blueprints in ROUTES.items():
        if part in parts:
            for blueprint in blueprints:
                app.register_blueprint(blueprint)
    errors.register(app)

    @app.before_request
    async def _start_request() -> None:
        # One lookup of the request behind Quart's proxy (each proxy access is a
        # context-variable walk; issue 22, bench/edge_layers.py).
        req = request._get_current_object()
        g.started = time.perf_counter()
        g.request_id = request_id = request_id_of(req.scope)
        logs.request_id.set(request_id)
        log.debug("start %s %s", req.method, req.path)
        logs.merchant_id.set(None)
        view_args = req.view_args or {}
        logs.payment_id.set(view_args.get("payment_id"))
        if "\x00" in req.path or any(isinstance(v, str) and "\x00" in v for v in view_args.values()) \
                or (req.query_string and any("\x00" in v for v in (*req.args.values(), *req.args.keys()))):
            raise InvalidRequest("NUL characters are not allowed in the URL.")

    @app.after_request
    async def _observe(response):
        req = request._get_current_object()
        now = time.perf_counter()
        elapsed = now - g.get("started", now)
        method = req.method
        rule = req.url_rule.rule if req.url_rule is not None else "unmatched"
        if tracing.recording():
            name_after_route(method, rule)
        status = response.status_code
        metrics.observe_request(method, rule, status, elapsed)
        if "request_id" in g:
            response.headers["Request-Id"] = g.request_id
        log.debug("%s %s → %s in %.1f ms", method, rule, status, elapsed * 1000)
        return response

    return app


def asgi_edge(app: PaycastApp):
    """What hypercorn serves, outermost first: the completion of each HTTP/1.1
    exchange (:class:`app.keepalive.CompleteExchange`, the workaround of
    hypercorn's lost keep-alive connections), tracing, the per-request deadline
    (:class:`app.deadline.RequestDeadline`), header and body limits, then the
    busiest surfaces of the role at the ASGI level (the realtime WebSocket,
    :class:`app.realtime_endpoint.RealtimeEndpoint`; gateway webhooks,
    :class:`app.webhooks_endpoint.WebhooksEndpoint`; the merchant's hot POSTs,
    :class:`app.merchant_endpoint.MerchantEndpoint`), then Quart."""
    inner = app
    settings = app.components.settings
    max_body = app.config["MAX_CONTENT_LENGTH"]
    parts = parts_of(settings.role)
    if Part.MERCHANT_HTTP in parts and settings.merchant_posts_at_asgi:
        inner = MerchantEndpoint(inner, app.components, app.merchant_keys, app.config["METRICS"], max_body)
    if Part.WEBHOOKS_IN in parts:
        inner = WebhooksEndpoint(inner, app.components, app.config["METRICS"], max_body)
    if Part.REALTIME in parts:
        inner = RealtimeEndpoint(inner, app.components.realtime)
    guarded = RequestDeadline(BodyLimit(inner, max_body), settings.request_deadline_s, app.config["METRICS"],
                              max_buffered=max_body)
    return CompleteExchange(TracingMiddleware(guarded), drain_bytes=max_body)


async def serve_http(app: Quart, host: str, port: int, shutdown: trio.Event, *, graceful_timeout: float,
                     reuse_port: bool = False,
                     certfile: str | None = None, keyfile: str | None = None,
                     task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until ``shutdown`` is set, then drain in-flight requests.

    Reports the bound addresses through ``task_status`` (``port=0`` picks a free
    port); they start with ``https://`` when ``certfile``/``keyfile`` are given
    (then the server speaks only HTTPS and WSS).

    Args:
      reuse_port: bind with ``SO_REUSEPORT`` so several processes serve one port
        (``run.py serve --workers N``); the kernel spreads connections over them.
    """
    config = http_config.configure(trio_edge.config())
    if certfile and keyfile:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
    config.bind = [f"{host}:{port}"]
    if reuse_port:
        from app.sockets import reuse_port_socket

        # hypercorn takes the socket over by its descriptor (and listens on it).
        config.bind = [f"fd://{reuse_port_socket(host, port).detach()}"]
    config.graceful_timeout = graceful_timeout
    trio_edge.install()  # hypercorn's trio socket layer without its per-request tasks and scheduler trips
    connection_teardown.install()  # each connection freed by reference counting when it ends
    await serve(asgi_edge(app), config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")
