"""Logs, traces and metrics, usable from every layer (like ``config``).

``telemetry.logs`` formats log records as JSON with the request, merchant
and payment in context; ``telemetry.tracing`` wraps OpenTelemetry (spans, W3C
``traceparent``); ``telemetry.metrics`` holds the Prometheus counters and
histograms that storage, actors and the edge record into as things happen;
``telemetry.app_metrics`` the per-app registry of gauges read at scrape time
(``/metrics``); ``telemetry.http`` the ASGI middleware that opens a span per
HTTP request; ``telemetry.tasks`` the trio instrument behind
``PAYCAST_TRACE_TASKS``. None of them imports anything of ours but
``telemetry`` itself, so every layer may use them freely.
"""
