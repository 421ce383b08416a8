"""Read endpoints behind the operator console, merchant-scoped:

- ``GET /v1/stats/payments?window=1h``: per-minute payments by status and
  attempts / success rate / latency per connector;
- ``GET /v1/stats/overview``: the counters an on-call engineer looks at first,
  and connector health (breaker state from this process, latency from the
  database);
- ``GET /v1/stats/lists/{name}``: the objects behind one counter;
- ``GET /v1/payments/{id}/timeline``: one payment and everything about it, in time order;
- ``GET /v1/search?q=``: payments by payment, order, customer, connector transaction,
  refund or dispute id.

Documented in docs/console.md and in /openapi.json (app/console_openapi.py).
"""

from __future__ import annotations

import re

import trio
from quart import Blueprint, g, request

from app.auth import merchant_required
from app.body import json_response, page_params
from app.context import components
from domain import render
from domain.errors import InvalidRequest, NotFound
from storage import stats

bp = Blueprint("stats", __name__)

_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([mh])$")
MIN_WINDOW_S, MAX_WINDOW_S = 5 * 60, 24 * 3600
_BUCKETS = 60  # points per series, whatever the window
# From this bucket width on, buckets are whole hours: a 24 h chart of 24-minute buckets would read
# 1,440 minute rollups per status and connector; of hour buckets, 24.
HOUR_BUCKETS_FROM_S = 20 * 60


def parse_window(raw: str | None) -> tuple[int, int]:
    """``window`` (``15m``, ``1h``, ``24h``…; default ``1h``) as ``(window_s, bucket_s)``.

    Buckets are one minute up to a one-hour window, then widened (in whole
    minutes) so a series never has more than 60 points; a bucket that would be
    20 minutes or more is a whole hour (windows over 20 hours), so the series is
    read from the hour rollups and costs the same whatever the traffic in the window.

    Raises:
      InvalidRequest: not ``<n>m``/``<n>h`` between 5 minutes and 24 hours.
    """
    match = _WINDOW.match(raw or "1h")
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 3600) if match else 0
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise InvalidRequest("window must look like 15m or 1h, between 5m and 24h.", param="window")
    bucket_s = max(60, -(-seconds // _BUCKETS // 60) * 60)
    if bucket_s >= HOUR_BUCKETS_FROM_S:
        bucket_s = 3600
    return seconds - seconds % bucket_s, bucket_s



@bp.get("/v1/stats/payments")
@merchant_required
async def payment_stats():
    window_s, bucket_s = parse_window(request.args.get("window"))
    series = await components().console.payment_series(g.merchant_id, window_s, bucket_s)
    return json_response({"object": "payment_stats", "window_s": window_s, "bucket_s": bucket_s, **series})


@bp.get("/v1/stats/overview")
@merchant_required
async def overview():
    system = components()
    window_s, bucket_s = parse_window(request.args.get("window"))
    counts, window = await system.console.overview(g.merchant_id, window_s, bucket_s)
    now = trio.current_time()
    health = system.routing.health(now)
    by_name = {c["name"]: c for c in window}
    connectors = []
    for name in sorted(set(health) | set(by_name)):
        db_view = by_name.get(name, {})
        breaker = health.get(name, {})
        connectors.append({
            "object": "connector_health", "name": name, "state": breaker.get("state"),
            "attempts": db_view.get("attempts_total", 0), "success_rate": db_view.get("success_rate_total"),
            "latency_ms_p50": db_view.get("latency_ms_p50"), "latency_ms_p99": db_view.get("latency_ms_p99"),
        })
    return json_response({"object": "overview", "window_s": window_s, **counts, "connectors": connectors})


@bp.get("/v1/stats/lists/<name>")
@merchant_required
async def list_behind(name: str):
    if name not in stats.LISTS:
        raise NotFound(f"No such list: '{name}' (one of {', '.join(stats.LISTS)})", param="name")
    limit, after, _ = page_params()
    items, more = await components().console.list_behind(g.merchant_id, name, limit=limit, starting_after=after)
    return json_response(render.page(items, more))


@bp.get("/v1/payments/<payment_id>/timeline")
@merchant_required
async def payment_timeline(payment_id: str):
    return json_response(await components().console.timeline(g.merchant_id, payment_id))


@bp.get("/v1/search")
@merchant_required
async def search():
    term = (request.args.get("q") or "").strip()
    if not term or len(term) > 255:
        raise InvalidRequest("q must be 1 to 255 characters: a payment, order, customer, connector transaction,"
                             " refund or dispute id.", param="q")
    limit, _, _ = page_params()
    found = await components().console.search(g.merchant_id, term, limit + 1)
    return json_response({**render.page(found[:limit], len(found) > limit), "query": term})
