"""Process-wide Prometheus metrics recorded where things happen.

Gauges that are read from the database or from live objects at scrape time
stay in :mod:`telemetry.app_metrics`; this module holds what must be counted as it
happens (transitions, connector calls, webhook latencies, units of work), in
one process-wide registry that ``/metrics`` renders next to the app's.
prometheus_client's metrics are thread-safe, so the database loop thread
records into them directly.

State changes made inside a unit of work are reported with
:func:`transition`; they are counted and logged only once the unit's
transaction has committed (:func:`unit_of_work` collects them), so a
rolled-back change never shows up as having happened.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("paycast.transitions")

REGISTRY = CollectorRegistry()

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

TRANSITIONS = Counter(
    "paycast_transitions_total", "Committed state changes of payments, refunds and wallet transactions",
    ["object", "from_status", "to_status"], registry=REGISTRY)
CONNECTOR_CALLS = Counter(
    "paycast_connector_calls_total", "Connector calls by operation and outcome",
    ["connector", "operation", "outcome"], registry=REGISTRY)
CONNECTOR_SECONDS = Histogram(
    "paycast_connector_call_seconds", "Connector call latency", ["connector", "operation"],
    registry=REGISTRY, buckets=_FAST)
WEBHOOKS_RECEIVED = Counter(
    "paycast_gateway_webhooks_received_total", "Gateway webhooks stored (new) or answered as duplicates",
    ["connector", "result"], registry=REGISTRY)
SIGNATURE_FAILURES = Counter(
    "paycast_gateway_webhook_signature_failures_total", "Gateway webhooks refused for a bad or stale signature",
    ["connector", "code"], registry=REGISTRY)
WEBHOOK_APPLY_SECONDS = Histogram(
    "paycast_gateway_webhook_apply_latency_seconds", "From a gateway webhook's receipt to its apply",
    ["connector", "result"], registry=REGISTRY, buckets=_SLOW)
DELIVERIES = Counter(
    "paycast_webhook_delivery_attempts_total", "Outgoing webhook attempts by what came of them",
    ["outcome"], registry=REGISTRY)
DELIVERY_SECONDS = Histogram(
    "paycast_webhook_delivery_seconds", "Outgoing webhook send latency (request to response headers)",
    registry=REGISTRY, buckets=_SLOW)
DB_UNITS = Histogram(
    "paycast_db_unit_seconds", "Database units of work: latency of the whole crossing, by unit and outcome",
    ["unit", "outcome"], registry=REGISTRY, buckets=_FAST)
REALTIME_MESSAGES = Counter(
    "paycast_realtime_messages_sent_total", "Realtime frames written to WebSocket clients", registry=REGISTRY)
GC_PAUSES = Histogram(
    "paycast_gc_pause_seconds", "Cycle-collector pauses of this process by generation (the loop stops meanwhile)",
    ["generation"], registry=REGISTRY, buckets=_FAST)
MAILBOX_HIGH_WATER = Gauge(
    "paycast_actor_mailbox_high_water", "Deepest actor inbox seen since the process started, by actor kind",
    ["kind"], registry=REGISTRY)


def observe_gc_pauses() -> None:
    """Time every cycle collection into :data:`GC_PAUSES` (once per process).

    Collector pauses stop every task and thread of the process at once; under
    load they set the realtime latency's tail (bench/RESULTS.md), so an
    operator sees them next to the latencies they explain.
    """
    import gc
    import time

    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    if not any(getattr(cb, "__qualname__", "") == callback.__qualname__ for cb in gc.callbacks):
        gc.callbacks.append(callback)


@dataclass(frozen=True)
class _Transition:
    object: str
    object_id: str
    from_status: str
    to_status: str
    detail: str


_pending: contextvars.ContextVar[list[_Transition] | None] = contextvars.ContextVar(
    "paycast_pending_transitions", default=None)


def transition(obj: str, object_id: str, from_status: str | None, to_status: str, **detail: object) -> None:
    """Report a state change of ``obj`` (``payment``, ``refund``, ``transaction``).

    Inside a unit of work it is held until commit; outside one it counts now.

    Args:
      from_status: the status before (None: the object is new).
      detail: a few identifying fields for the log line (connector, amount);
        never a secret or a card number.
    """
    if from_status == to_status:
        return  # e.g. a pending answer keeps a payment processing: not a change
    item = _Transition(obj, object_id, from_status or "new", to_status,
                       " ".join(f"{k}={v}" for k, v in detail.items() if v is not None))
    pending = _pending.get()
    if pending is None:
        _record([item])
    else:
        pending.append(item)


@contextlib.contextmanager
def unit_of_work() -> Iterator[None]:
    """Collect :func:`transition` reports of the block; record them only if it completes.

    Used by :func:`storage.observe.observed` around each crossing. The unit
    runs on the loop thread in a copy of the caller's context, which holds the
    same list: what it reports lands here, and is recorded once the crossing
    returned (committed); an exception records nothing.
    """
    collected: list[_Transition] = []
    token = _pending.set(collected)
    try:
        yield
    finally:
        _pending.reset(token)
    _record(collected)


def discard_pending() -> None:
    """Forget the transitions reported so far in the current unit of work: its transaction
    rolled back (a group commit whose units are then run again alone, each reporting its own)."""
    pending = _pending.get()
    if pending is not None:
        pending.clear()


def _record(items: list[_Transition]) -> None:
    for t in items:
        TRANSITIONS.labels(t.object, t.from_status, t.to_status).inc()
        log.info("%s %s: %s → %s%s", t.object, t.object_id, t.from_status, t.to_status,
                 f" ({t.detail})" if t.detail else "")


def observe_mailbox(kind: str, depth: int) -> None:
    """Raise the kind's mailbox high-water mark to ``depth`` if deeper (cheap: a dict lookup).

    The mark only grows (since process start): a reset at scrape would be wrong
    as soon as two Prometheus servers scrape the same process.
    """
    if depth > _high_water.get(kind, 0):
        _high_water[kind] = depth
        MAILBOX_HIGH_WATER.labels(kind).set(depth)


_high_water: dict[str, int] = {}
