"""Observing outgoing webhook sends: the span, the ``traceparent`` header, metrics and the log line.

The dispatcher calls these at three points (one line each) so its own logic
stays as it is: :func:`send_span` around a whole delivery, :func:`trace_headers`
when it builds a request, :func:`attempt_recorded` once the attempt's outcome
is known.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from telemetry import metrics, tracing

log = logging.getLogger("paycast.webhooks.out")


@contextlib.contextmanager
def send_span(row: dict) -> Iterator[None]:
    """The span of one delivery attempt, continuing the trace stored with its event.

    Args:
      row: a claimed delivery (:func:`storage.webhook_deliveries.claim`).
    """
    with tracing.span("webhook send", {"paycast.delivery_id": row["id"], "paycast.event_id": row["event"]["id"],
                                       "paycast.endpoint_id": row["endpoint_id"], "paycast.attempt": row["attempt"]},
                      parent=tracing.from_traceparent(row.get("traceparent")), kind=tracing.SpanKind.CLIENT):
        yield


def trace_headers() -> dict[str, str]:
    """``{"traceparent": …}`` of the current send span, or of the event's trace passed through.

    An event stored without one (written before traceparents were stored) is sent
    in a new trace: every outgoing webhook carries a traceparent (docs/api.md "Processes and transport", Tracing).
    """
    return {"traceparent": tracing.current_traceparent() or tracing.new_traceparent()}


def attempt_recorded(row: dict, outcome: str | None, status_code: int | None, latency_ms: int,
                     error: str | None) -> None:
    """Count, time and log one attempt; ``outcome`` None: it could not be recorded (sent again later)."""
    label = _outcome_label(outcome, status_code)
    metrics.DELIVERIES.labels(label).inc()
    metrics.DELIVERY_SECONDS.observe(latency_ms / 1000)
    span = tracing.current_span()
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    span.set_attribute("paycast.delivery.outcome", label)
    if label != "succeeded":
        tracing.set_error(span, error or f"HTTP {status_code}")
    # The endpoint id, never its URL (a URL may carry a token in its query).
    log.info("webhook %s (%s) to %s attempt %s: %s → %s in %d ms", row["id"], row["event"]["type"],
             row["endpoint_id"], row["attempt"],
             status_code if status_code is not None else (error or "no answer")[:80], label, latency_ms)


def _outcome_label(outcome: str | None, status_code: int | None) -> str:
    """What came of one attempt, for ``paycast_webhook_delivery_attempts_total``: a small fixed set.

    ``succeeded``; ``retry`` (the delivery stays pending for a later attempt);
    ``disabled`` (410); ``failed`` (attempts exhausted); ``unrecorded`` (the
    database was unreachable: the lease runs out and it is sent again).
    """
    if outcome is None:
        return "unrecorded"
    if outcome == "succeeded":
        return "succeeded"
    if outcome == "pending":
        return "retry"
    return "disabled" if status_code == 410 else "failed"
