"""Every connector call observed in one place: a span, a counter by outcome and a latency histogram.

:func:`instrument` wraps each connector of the system once, so every caller
(payment actor, refunds, payouts, reconciliation, disputes) is covered
without a line in any of them. A caller's own time limit (``trio.fail_after``
around the call) cancels the call inside the wrapper: that shows as outcome
``cancelled``.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from domain.payments import Outcome
from gateways.base import ConnectorError, ConnectorServerError, ConnectorTimeout, ConnectorUnavailable, Submission
from telemetry import metrics, tracing

# The connector protocol's calls (gateways.base.Connector).
OPERATIONS = frozenset({"authorize", "capture", "void", "retrieve", "refund", "payout", "retrieve_refund",
                        "retrieve_payout", "submit_dispute_evidence", "accept_dispute"})


def _answer(result: Any) -> str:
    """The outcome label of a call that returned."""
    if isinstance(result, Outcome):
        return result.kind.value
    if isinstance(result, Submission):
        return result.status
    return "ok"


def _failure(exc: BaseException) -> str:
    """The outcome label of a call that raised (a small, fixed set)."""
    if isinstance(exc, ConnectorTimeout):
        return "timeout"
    if isinstance(exc, ConnectorUnavailable):
        return "unavailable"
    if isinstance(exc, ConnectorServerError):
        return "server_error"
    if isinstance(exc, ConnectorError):
        return "error"
    if isinstance(exc, trio.Cancelled):
        return "cancelled"
    return "exception"


class InstrumentedConnector:
    """Wraps a connector; attributes other than the protocol's calls pass through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._name = inner.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr not in OPERATIONS:
            return value
        return self._wrap(attr, value)

    def _wrap(self, operation: str, call: Any) -> Any:
        name = self._name

        async def observed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "exception"
            with tracing.span(f"connector {name} {operation}", {"paycast.connector": name,
                                                                "paycast.connector.operation": operation}) as span:
                try:
                    result = await call(*args, **kwargs)
                    outcome = _answer(result)
                    return result
                except BaseException as exc:
                    outcome = _failure(exc)
                    raise
                finally:
                    span.set_attribute("paycast.connector.outcome", outcome)
                    elapsed = time.perf_counter() - started
                    metrics.CONNECTOR_CALLS.labels(name, operation, outcome).inc()
                    metrics.CONNECTOR_SECONDS.labels(name, operation).observe(elapsed)

        return observed


def instrument(connectors: dict[str, Any]) -> dict[str, Any]:
    """The same connectors, each wrapped in an :class:`InstrumentedConnector`."""
    return {name: InstrumentedConnector(c) for name, c in connectors.items()}
