"""A span per HTTP request, continuing the caller's W3C ``traceparent``.

An ASGI middleware, outermost, so the span covers everything (body limit,
routing, the handler, error rendering). Quart runs the handler in the
request's own task (app/quart_http.py), and any task spawned from inside gets a
copy of the spawner's context, so the span is the current span of the handler
and of all it awaits. The route template is
known only after routing; :func:`name_after_route` renames the span then.
WebSockets are not traced as one span (they live for hours).
"""

from __future__ import annotations

from typing import Any

from telemetry import tracing


class TracingMiddleware:
    """Wraps an ASGI app; one server-kind span per HTTP request."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        parent = tracing.from_asgi_headers(scope.get("headers") or [])
        method = scope.get("method", "GET")
        status: dict[str, int] = {}

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        # No incoming traceparent and no SDK: the events this request writes share one new trace.
        with tracing.fallback_trace(), \
                tracing.span(f"{method} unmatched", {"http.request.method": method, "url.path": scope.get("path", "")},
                             parent=parent, kind=tracing.SpanKind.SERVER) as span:
            await self._app(scope, receive, observed_send)
            code = status.get("code")
            if code is not None:
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    tracing.set_error(span, f"HTTP {code}")


def name_after_route(method: str, rule: str) -> None:
    """Rename the current request span to ``METHOD /route/<template>`` (low cardinality)."""
    span = tracing.current_span()
    if span.is_recording():
        span.update_name(f"{method} {rule}")
        span.set_attribute("http.route", rule)
