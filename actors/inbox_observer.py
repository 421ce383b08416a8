"""Observing the apply of stored gateway webhooks: span, receive → apply latency, log line.

The inbox processor calls these at its hook points (one line each):
:func:`apply_span` around one row's apply, :func:`applied` with its result,
:func:`ignored` for rows set aside in bulk as late or repeated outcomes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator

from telemetry import metrics, tracing

log = logging.getLogger("paycast.inbox")
# Answers of storage.inbox.apply that mean "not done yet, tried again later"
# (here, or by the process that holds the row now).
_NOT_YET = frozenset({"retry", "deferred", "taken_over"})


@contextlib.contextmanager
def apply_span(row: dict) -> Iterator[None]:
    """The span of one apply, continuing the trace of the request that stored the row."""
    with tracing.span(f"inbox apply {row['kind']}", {"paycast.inbox_id": row["id"],
                                                      "paycast.connector": row["connector"]},
                      parent=tracing.from_traceparent(row.get("traceparent"))):
        yield


def applied(row: dict, status: str) -> None:
    """Record what became of one row: span attribute; once done, its latency and one log line."""
    tracing.current_span().set_attribute("paycast.inbox.status", status)
    if status in _NOT_YET or row.get("received_at") is None:
        return
    latency = _since_received(row)
    metrics.WEBHOOK_APPLY_SECONDS.labels(row["connector"], status).observe(latency)
    log.info("webhook %s applied: %s %s for %s → %s after %.0f ms (try %s)", row["id"], row["connector"],
             row["kind"], row["payment_id"] or "-", status, latency * 1000, row.get("tries"))


def ignored(rows: list[dict]) -> None:
    """Late or repeated outcomes set aside in bulk: their latency, and one log line per webhook."""
    for row in rows:
        if row.get("received_at") is None:
            continue
        latency = _since_received(row)
        metrics.WEBHOOK_APPLY_SECONDS.labels(row["connector"], "ignored").observe(latency)
        log.info("webhook %s applied: %s %s for %s → ignored (late or repeated) after %.0f ms", row["id"],
                 row["connector"], row["kind"], row["payment_id"] or "-", latency * 1000)


def _since_received(row: dict) -> float:
    """Seconds from the row's receipt (``received_at``, the database's clock) to now (ours)."""
    return (dt.datetime.now(dt.timezone.utc) - row["received_at"]).total_seconds()
