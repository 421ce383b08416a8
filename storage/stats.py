"""Read-only queries behind the operator console (issue 15): per-minute payment
stats, the overview counters and the lists behind them.

Every query is scoped to one merchant (DESIGN.md decision 10) and is a
single statement; nothing here writes.
"""

from __future__ import annotations

import asyncpg

from domain import render
from domain.payments import Status

PAYMENT_STATUSES = tuple(status.value for status in Status)
# Attempt statuses that count as the connector charging (or holding) the money.
_SUCCESS = ("succeeded", "authorized")

# Names of the lists behind the overview's counters (GET /v1/stats/lists/{name}).
LISTS = ("processing_overdue", "review_required", "deliveries_failing", "realtime_connections")


def bucket_edges(now_s: float, window_s: int, bucket_s: int) -> list[int]:
    """Start (unix seconds) of every bucket of the window ending at ``now_s``, oldest first.

    The last bucket is the one ``now_s`` falls in (still filling).
    """
    last = int(now_s // bucket_s) * bucket_s
    count = window_s // bucket_s
    return [last - bucket_s * (count - 1 - i) for i in range(count)]


async def payment_series(conn: asyncpg.Connection, merchant_id: str, window_s: int, bucket_s: int) -> dict:
    """Payments per bucket by status, and attempts per bucket by connector, over the last ``window_s``.

    A payment is counted in the bucket of its ``created_at`` under its current
    status; an attempt in the bucket of its ``created_at`` as a success
    (``succeeded``/``authorized``), a failure (``failed``/``unknown``) or still
    open (``started``, excluded from the rate).

    Returns:
      ``{"buckets": [unix...], "payments": {status: [n...]}, "connectors": [{name, attempts: [n...],
      succeeded: [n...], success_rate: [float|None...], latency_ms_p50, latency_ms_p99, ...}]}``.
    """
    # date_bin groups on timestamps; the epoch conversion (numeric in PostgreSQL
    # ≥ 14, slow per row) is done once per group, outside.
    rows = await conn.fetch(
        "SELECT kind, extract(epoch FROM bucket)::bigint AS bucket, key, status, n, p50, p99,"
        " extract(epoch FROM now())::float8 AS now_s FROM ("
        " SELECT 'p' AS kind, date_bin(make_interval(secs => $3), p.created_at, 'epoch') AS bucket,"
        "        p.status AS key, NULL::text AS status, count(*) AS n, NULL::float8 AS p50, NULL::float8 AS p99"
        "   FROM payments p WHERE p.merchant_id = $1 AND p.created_at > now() - make_interval(secs => $2)"
        "   GROUP BY 2, 3"
        " UNION ALL"
        " SELECT 'a', date_bin(make_interval(secs => $3), a.created_at, 'epoch'), a.connector, a.status, count(*),"
        "        NULL, NULL"
        "   FROM payment_attempts a WHERE a.merchant_id = $1 AND a.created_at > now() - make_interval(secs => $2)"
        "   GROUP BY 2, 3, 4"
        " UNION ALL"
        " SELECT 'l', NULL, a.connector, NULL, count(a.latency_ms),"
        "        percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms),"
        "        percentile_cont(0.99) WITHIN GROUP (ORDER BY a.latency_ms)"
        "   FROM payment_attempts a WHERE a.merchant_id = $1 AND a.created_at > now() - make_interval(secs => $2)"
        "   AND a.latency_ms IS NOT NULL GROUP BY 3) grouped",
        merchant_id, float(window_s), float(bucket_s),
    )
    now_s = rows[0]["now_s"] if rows else await conn.fetchval("SELECT extract(epoch FROM now())::float8")
    edges = bucket_edges(now_s, window_s, bucket_s)
    index = {edge: i for i, edge in enumerate(edges)}
    payments = {status: [0] * len(edges) for status in PAYMENT_STATUSES}
    connectors: dict[str, dict] = {}

    def connector(name: str) -> dict:
        if name not in connectors:
            connectors[name] = {"name": name, "attempts": [0] * len(edges), "succeeded": [0] * len(edges),
                                "open": [0] * len(edges), "latency_ms_p50": None, "latency_ms_p99": None,
                                "timed_attempts": 0}
        return connectors[name]

    for r in rows:
        if r["kind"] == "l":
            c = connector(r["key"])
            c["latency_ms_p50"] = round(r["p50"], 3)
            c["latency_ms_p99"] = round(r["p99"], 3)
            c["timed_attempts"] = r["n"]
            continue
        i = index.get(r["bucket"])
        if i is None:  # created in the bucket just before the window's first edge
            continue
        if r["kind"] == "p":
            payments.setdefault(r["key"], [0] * len(edges))[i] += r["n"]
        else:
            c = connector(r["key"])
            if r["status"] == "started":
                c["open"][i] += r["n"]
            else:
                c["attempts"][i] += r["n"]
                if r["status"] in _SUCCESS:
                    c["succeeded"][i] += r["n"]
    out = []
    for name in sorted(connectors):
        c = connectors[name]
        c["success_rate"] = [round(s / a, 4) if a else None for s, a in zip(c["succeeded"], c["attempts"])]
        settled, ok = sum(c["attempts"]), sum(c["succeeded"])
        c["attempts_total"], c["succeeded_total"] = settled, ok
        c["success_rate_total"] = round(ok / settled, 4) if settled else None
        out.append(c)
    return {"buckets": edges, "payments": payments, "connectors": out,
            "totals": {status: sum(series) for status, series in payments.items()}}


async def connector_window(conn: asyncpg.Connection, merchant_id: str, window_s: int) -> list[dict]:
    """Per connector over the last ``window_s``: settled attempts, successes, rate and latency percentiles.

    The same definitions as :func:`payment_series`, without the per-bucket split.
    """
    rows = await conn.fetch(
        "SELECT connector AS name, count(*) FILTER (WHERE status <> 'started') AS attempts_total,"
        " count(*) FILTER (WHERE status = ANY($3::text[])) AS succeeded_total,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99"
        " FROM payment_attempts WHERE merchant_id = $1 AND created_at > now() - make_interval(secs => $2)"
        " GROUP BY connector ORDER BY connector",
        merchant_id, float(window_s), list(_SUCCESS),
    )
    return [{"name": r["name"], "attempts_total": r["attempts_total"], "succeeded_total": r["succeeded_total"],
             "success_rate_total": round(r["succeeded_total"] / r["attempts_total"], 4) if r["attempts_total"] else None,
             "latency_ms_p50": round(r["p50"], 3) if r["p50"] is not None else None,
             "latency_ms_p99": round(r["p99"], 3) if r["p99"] is not None else None} for r in rows]


async def overview_counts(conn: asyncpg.Connection, merchant_id: str, presence_ttl_s: float) -> dict:
    """The counters an on-call engineer looks at first, in one statement.

    Returns:
      ``{processing_overdue, review_required, deliveries_failing, realtime_connections,
      payments: {status: n}}`` (``payments`` over all time).
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
        " (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb) FROM"
        "   (SELECT status, count(*) AS n FROM payments WHERE merchant_id = $1 GROUP BY status) s) AS payments",
        merchant_id, presence_ttl_s,
    )
    counts = dict(row)
    counts["payments"] = {status: int(counts["payments"].get(status, 0)) for status in PAYMENT_STATUSES}
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
