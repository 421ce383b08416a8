"""OpenAPI entries for the operator console's read endpoints and pages.

Kept apart from :mod:`app.openapi` so the console's additions stay in one
place; the ``/openapi.json`` route (app/routes/ops.py) adds :data:`OPERATIONS`
to :mod:`app.openapi`'s table, so this module imports that one and not the reverse.
"""

from __future__ import annotations

from typing import Literal

from app.openapi import NOT_BLANK, ListOf, Op, Out, Payment

_PAGE = (("limit", {"type": "integer", "minimum": 1, "maximum": 100}), ("starting_after", {"type": "string"}))
# app.routes.stats.parse_window: <n>m or <n>h between 5 minutes and 24 hours (5m…1440m, 1h…24h);
# empty is the default.
_WINDOW = (("window", {"type": "string",
                       "pattern": "^(?:(?:[5-9]|[1-9][0-9]|[1-9][0-9]{2}|1[0-3][0-9]{2}|14[0-3][0-9]|1440)m"
                                  "|(?:[1-9]|1[0-9]|2[0-4])h)?$",
                       "description": "5m to 24h; default 1h"}),)
_HTML = {"type": "string"}


class ConnectorSeries(Out):
    name: str
    attempts: list[int]
    succeeded: list[int]
    open: list[int]
    success_rate: list[float | None]
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    attempts_total: int
    succeeded_total: int
    success_rate_total: float | None
    timed_attempts: int
    latency_histogram: dict[str, int]


class PaymentStats(Out):
    object: Literal["payment_stats"]
    window_s: int
    bucket_s: int
    buckets: list[int]
    payments: dict[str, list[int]]
    connectors: list[ConnectorSeries]
    totals: dict[str, int]


class ConnectorHealth(Out):
    object: Literal["connector_health"]
    name: str
    state: Literal["closed", "open", "half_open"] | None
    attempts: int
    success_rate: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None


class Overview(Out):
    object: Literal["overview"]
    window_s: int
    processing_overdue: int
    review_required: int
    deliveries_failing: int
    realtime_connections: int
    payments: dict[str, int]
    connectors: list[ConnectorHealth]


class TimelineEntry(Out):
    at: str
    type: Literal["attempt", "webhook_in", "refund", "dispute", "event", "delivery"]
    data: dict


class PaymentTimeline(Out):
    object: Literal["payment_timeline"]
    payment: Payment
    entries: list[TimelineEntry]


class SearchResult(Payment):
    matched_on: Literal["payment_id", "order_id", "customer_id", "connector_txn_id", "refund_id", "dispute_id"]


class SearchResults(ListOf[SearchResult]):
    query: str


OPERATIONS: list[Op] = [
    Op("get", "/v1/stats/payments", "Payments per minute by status; attempts, success rate and latency per connector",
       {200: PaymentStats}, query=_WINDOW),
    Op("get", "/v1/stats/overview", "Console overview: counters and connector health", {200: Overview},
       query=_WINDOW),
    Op("get", "/v1/stats/lists/{name}", "The objects behind an overview counter (processing_overdue,"
       " review_required, deliveries_failing, realtime_connections)", {200: ListOf[dict]}, query=_PAGE),
    Op("get", "/v1/payments/{payment_id}/timeline", "A payment and everything about it, in time order",
       {200: PaymentTimeline}),
    Op("get", "/v1/search", "Payments by payment, order, customer, connector transaction, refund or dispute id",
       {200: SearchResults}, query=(("q", {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NOT_BLANK}),
                                    ("limit", {"type": "integer", "minimum": 1, "maximum": 100}))),
    Op("get", "/dashboard/payments/{payment_id}", "Console: a payment's page", {200: _HTML}, "none",
       body_media="text/html"),
    Op("get", "/dashboard/search", "Console: search page", {200: _HTML}, "none", body_media="text/html"),
    Op("get", "/dashboard/lists/{name}", "Console: the list behind a counter", {200: _HTML}, "none",
       body_media="text/html"),
    Op("get", "/dashboard/admin", "Console: webhook inbox and task tree (admin token)", {200: _HTML}, "none",
       body_media="text/html"),
    Op("get", "/dashboard/static/{name}", "Console assets (scripts, styles, vendored libraries and licences)",
       {200: {"type": "string"}}, "none", body_media="text/plain"),
]
