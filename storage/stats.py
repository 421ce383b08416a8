"""Read-only queries behind the operator console: per-minute
payment stats, the overview counters and the lists behind them.

Every query is scoped to one merchant (docs/architecture.md decision 10), is a single
statement, and costs the same whatever the number of payments stored:

- counts by status and the charts read the rollups that ``actor:rollups``
  folds from the event log (storage/rollups.py, domain/rollups.py): a chart
  over a window reads its minute rows (at most 1,200 buckets × the statuses
  and connectors seen), or its hour rows for hour buckets, the overview's connector figures read whole hours
  from hour rows and only the window's ragged ends from minute rows, and the
  all-time counts by status one row per status;
- "processing past deadline", "review required" and failing deliveries are
  counts over partial indexes (migration 0025) that hold only the rows they
  count, which an operator resolves (a few, not all payments ever).

The rollups lag the log by the actor's interval (``PAYCAST_ROLLUP_INTERVAL_S``,
0.25 s); the lists behind the counters read the tables themselves.
Nothing here writes.
"""

from __future__ import annotations

import asyncpg

from domain import latency, render, rollups
from domain.payments import Status

# Statuses every overview and chart shows, even at zero; any other status the
# rollups hold (a status added later) is shown too, as it appears in the data.
PAYMENT_STATUSES = tuple(s.value for s in Status)
# Attempt statuses that count as the connector charging (or holding) the money.
_SUCCESS = ("succeeded", "authorized")

# Names of the lists behind the overview's counters (GET /v1/stats/lists/{name}).
LISTS = ("processing_overdue", "review_required", "deliveries_failing", "realtime_connections")

# The window [start, now] of a chart or overview: whole buckets of $bucket_s ending with the one
# now() falls in, $window_s long (as bucket_edges); $1 merchant, $2 window_s, $3 bucket_s.
# (Written out where it bounds an index range: the planner then uses the rollups' primary key.)
_START_AT = "to_timestamp(floor(extract(epoch FROM now()) / $3) * $3 - $2 + $3)"
_WINDOW_CTE = f"w AS (SELECT {_START_AT} AS start_at)"


def bucket_edges(now_s: float, window_s: int, bucket_s: int) -> list[int]:
    """Start (unix seconds) of every bucket of the window ending at ``now_s``, oldest first.

    The last bucket is the one ``now_s`` falls in (still filling).
    """
    last = int(now_s // bucket_s) * bucket_s
    count = window_s // bucket_s
    return [last - bucket_s * (count - 1 - i) for i in range(count)]


def _connector_figures(name: str) -> dict:
    return {"name": name, "attempts_total": 0, "succeeded_total": 0, "latency": {}}


def _add_attempts(c: dict, status: str, n: int) -> bool:
    """Count ``n`` attempts of ``status`` into a connector's figures; False for open (``started``) ones."""
    if status == rollups.STARTED:
        return False
    c["attempts_total"] += n
    if status in _SUCCESS:
        c["succeeded_total"] += n
    return True


def _finish(c: dict) -> dict:
    """A connector's totals, success rate and latency percentiles (from its merged histogram)."""
    settled, ok, histogram = c["attempts_total"], c["succeeded_total"], c.pop("latency")
    p50, p99 = latency.quantile(0.5, histogram), latency.quantile(0.99, histogram)
    c.update(success_rate_total=round(ok / settled, 4) if settled else None,
             latency_ms_p50=round(p50, 3) if p50 is not None else None,
             latency_ms_p99=round(p99, 3) if p99 is not None else None,
             timed_attempts=sum(histogram.values()), latency_histogram=histogram)
    return c


async def payment_series(conn: asyncpg.Connection, merchant_id: str, window_s: int, bucket_s: int) -> dict:
    """Payments per bucket by status, and attempts per bucket by connector, over the last ``window_s``.

    From the minute rollups (the hour rollups when buckets are whole hours): a payment is counted in the bucket of its
    ``created_at`` under its current status; an attempt in the bucket of its
    ``created_at`` as a success (``succeeded``/``authorized``), a failure
    (``failed``/``unknown``) or still open (``started``, excluded from the
    rate); latency percentiles are estimated from the merged histogram of the
    window (domain/latency.py).

    Returns:
      ``{"buckets": [unix...], "payments": {status: [n...]}, "connectors": [{name, attempts: [n...],
      succeeded: [n...], success_rate: [float|None...], latency_ms_p50, latency_ms_p99, ...}]}``.
    """
    # Grouped on timestamps; the epoch conversion (numeric, slow per row) is done once per group, outside.
    rows = await conn.fetch(
        "SELECT extract(epoch FROM now())::float8 AS now_s, extract(epoch FROM g.bucket)::bigint AS bucket,"
        " g.dimension, g.connector, g.status, g.n FROM (SELECT 1) one LEFT JOIN ("
        "  SELECT date_bin(make_interval(secs => $3), r.bucket, 'epoch') AS bucket, r.dimension, r.connector,"
        "         r.status, sum(r.n)::bigint AS n FROM stats_rollups r"
        f"  WHERE r.merchant_id = $1 AND r.period_s = $4 AND r.bucket >= {_START_AT} GROUP BY 1, 2, 3, 4) g ON true",
        merchant_id, float(window_s), float(bucket_s), rollups.HOUR if bucket_s % rollups.HOUR == 0 else rollups.MINUTE,
    )
    edges = bucket_edges(rows[0]["now_s"], window_s, bucket_s)
    index = {edge: i for i, edge in enumerate(edges)}
    payments = {status: [0] * len(edges) for status in PAYMENT_STATUSES}
    connectors: dict[str, dict] = {}

    def connector(name: str) -> dict:
        if name not in connectors:
            connectors[name] = {**_connector_figures(name), "attempts": [0] * len(edges),
                                "succeeded": [0] * len(edges), "open": [0] * len(edges)}
        return connectors[name]

    for r in rows:
        i = index.get(r["bucket"])
        if i is None or not r["n"]:  # no rows at all (the LEFT JOIN's NULL row), or a bucket summed to 0
            continue
        if r["dimension"] == rollups.PAYMENT:
            payments.setdefault(r["status"], [0] * len(edges))[i] += r["n"]
        elif r["dimension"] == rollups.LATENCY:
            histogram = connector(r["connector"])["latency"]
            histogram[r["status"]] = histogram.get(r["status"], 0) + r["n"]
        else:
            c = connector(r["connector"])
            if _add_attempts(c, r["status"], r["n"]):
                c["attempts"][i] += r["n"]
                if r["status"] in _SUCCESS:
                    c["succeeded"][i] += r["n"]
            else:
                c["open"][i] += r["n"]
    out = []
    for name in sorted(connectors):
        c = _finish(connectors[name])
        c["success_rate"] = [round(s / a, 4) if a else None for s, a in zip(c["succeeded"], c["attempts"])]
        out.append(c)
    return {"buckets": edges, "payments": payments, "connectors": out,
            "totals": {status: sum(series) for status, series in payments.items()}}


async def connector_window(conn: asyncpg.Connection, merchant_id: str, window_s: int, bucket_s: int) -> list[dict]:
    """Per connector over the window of :func:`payment_series`: settled attempts, successes, rate and
    latency percentiles, the same definitions without the per-bucket split.

    Whole hours of the window come from hour rows, its ragged ends from minute
    rows: a 24 h window reads ~24 + 2 × 60 buckets per status and connector.
    """
    rows = await conn.fetch(
        f"WITH {_WINDOW_CTE},"
        " h AS (SELECT start_at, date_trunc('hour', start_at - interval '1 microsecond') + interval '1 hour' AS h1,"
        "        greatest(date_trunc('hour', start_at - interval '1 microsecond') + interval '1 hour',"
        "                 date_trunc('hour', now())) AS h2 FROM w)"
        " SELECT r.dimension, r.connector, r.status, sum(r.n)::bigint AS n FROM h JOIN stats_rollups r"
        "   ON r.merchant_id = $1 AND r.dimension IN ('attempt', 'latency')"
        "  AND ((r.period_s = 3600 AND r.bucket >= h.h1 AND r.bucket < h.h2)"
        "    OR (r.period_s = 60 AND r.bucket >= h.start_at AND (r.bucket < h.h1 OR r.bucket >= h.h2)))"
        " GROUP BY 1, 2, 3",
        merchant_id, float(window_s), float(bucket_s),
    )
    connectors: dict[str, dict] = {}
    for r in rows:
        c = connectors.setdefault(r["connector"], _connector_figures(r["connector"]))
        if r["dimension"] == rollups.LATENCY:
            c["latency"][r["status"]] = c["latency"].get(r["status"], 0) + r["n"]
        else:
            _add_attempts(c, r["status"], r["n"])
    return [_finish(connectors[name]) for name in sorted(connectors)]


async def overview_counts(conn: asyncpg.Connection, merchant_id: str, presence_ttl_s: float) -> dict:
    """The counters an on-call engineer looks at first, in one statement of bounded reads.

    Returns:
      ``{processing_overdue, review_required, deliveries_failing, realtime_connections,
      payments: {status: n}}`` (``payments`` over all time, from the all-time rollup rows).
    """
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT count(*) FROM payments WHERE merchant_id = $1 AND status = 'processing'"
        "   AND processing_deadline < now()) AS processing_overdue,"
        " (SELECT count(*) FROM payments WHERE merchant_id = $1 AND review_required) AS review_required,"
        " (SELECT count(*) FROM webhook_deliveries WHERE merchant_id = $1"
        "   AND (status = 'failed' OR (status = 'pending' AND attempt_count > 0))) AS deliveries_failing,"
        " (SELECT count(*) FROM realtime_presence WHERE merchant_id = $1"
        "   AND seen_at > now() - make_interval(secs => $2)) AS realtime_connections,"
        " (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb) FROM stats_rollups"
        "   WHERE merchant_id = $1 AND period_s = 0 AND bucket = 'epoch' AND dimension = 'payment' AND n <> 0)"
        "   AS payments",
        merchant_id, presence_ttl_s,
    )
    counts = dict(row)
    counts["payments"] = {**{status: 0 for status in PAYMENT_STATUSES},
                          **{status: int(n) for status, n in counts["payments"].items()}}
    return counts


# name -> SQL of one page, newest first: $1 merchant, $2 limit + 1, $3 starting_after or NULL
# (and $4 the presence TTL for connections).
_LIST_SQL = {
    "processing_overdue": (
        "SELECT * FROM payments WHERE merchant_id = $1 AND status = 'processing' AND processing_deadline < now()"
        " AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $2"),
    "review_required": (
        "SELECT * FROM payments WHERE merchant_id = $1 AND review_required"
        " AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $2"),
    "deliveries_failing": (
        "SELECT * FROM webhook_deliveries WHERE merchant_id = $1"
        " AND (status = 'failed' OR (status = 'pending' AND attempt_count > 0))"
        " AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $2"),
    "realtime_connections": (
        "SELECT connection_id AS id, client_id, device_id, connected_at, seen_at FROM realtime_presence"
        " WHERE merchant_id = $1 AND seen_at > now() - make_interval(secs => $4)"
        " AND ($3::text IS NULL OR connection_id < $3) ORDER BY connection_id DESC LIMIT $2"),
}


def _connection(row) -> dict:
    return {"id": row["id"], "object": "realtime_connection", "client_id": row["client_id"],
            "device_id": row["device_id"], "connected_at": render.iso(row["connected_at"]),
            "seen_at": render.iso(row["seen_at"])}


async def list_behind(conn: asyncpg.Connection, merchant_id: str, name: str, *, limit: int,
                      starting_after: str | None, presence_ttl_s: float) -> tuple[list[dict], bool]:
    """One page of the objects a counter of :func:`overview_counts` counts, newest first.

    Args:
      name: one of :data:`LISTS` (the caller validates it).

    Returns:
      ``(objects in their API form, has_more)``.
    """
    args = (merchant_id, limit + 1, starting_after) + ((presence_ttl_s,) if name == "realtime_connections" else ())
    rows = await conn.fetch(_LIST_SQL[name], *args)
    more, rows = len(rows) > limit, rows[:limit]
    if name == "realtime_connections":
        return [_connection(r) for r in rows], more
    if name == "deliveries_failing":
        attempts: dict[str, list] = {r["id"]: [] for r in rows}
        for a in await conn.fetch("SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY id",
                                  list(attempts)):
            attempts[a["delivery_id"]].append(a)
        return [render.webhook_delivery(r, attempts[r["id"]]) for r in rows], more
    by_payment: dict[str, list] = {r["id"]: [] for r in rows}
    for a in await conn.fetch("SELECT * FROM payment_attempts WHERE payment_id = ANY($1::text[]) ORDER BY id",
                              list(by_payment)):
        by_payment[a["payment_id"]].append(a)
    return [render.payment(r, by_payment[r["id"]]) for r in rows], more
