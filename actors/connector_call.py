"""One way to call a connector: bounded, breaker-fed, errors typed.

Every connector call site (authorize, capture, void, retrieve, refund,
payout, dispute actions) goes through :meth:`ConnectorCaller.call`, so each
call is

* bounded by the connector timeout (a call that overruns is a
  :class:`~gateways.base.ConnectorTimeout`: it may or may not have happened);
* gated by the connector's circuit breaker when it starts new money movement
  (``gate=True``): an open circuit refuses without sending anything
  (:class:`~gateways.base.CircuitOpen`), and a half-open one lets exactly one
  probe through, whose outcome closes or re-opens it;
* fed back to the breaker (success, failure, latency) whatever happens,
  cancellation included, so a probe slot is never left taken;
* turned into a :class:`CallResult` that says whether the connector
  guarantees nothing was processed (:func:`gateways.base.nothing_charged`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from domain.breaker import CircuitBreaker
from domain.errors import Unavailable
from gateways.base import CircuitOpen, ConnectorError, ConnectorTimeout, ConnectorUnavailable, nothing_charged

log = logging.getLogger("paycast.connectors")
T = TypeVar("T")


@dataclass(frozen=True)
class CallResult(Generic[T]):
    """What one connector call came to.

    Attributes:
      connector: the connector's name.
      value: what the connector answered (None when ``error`` is set).
      error: the typed failure, or None.
      nothing_charged: ``error`` is one the connector guarantees processed
        nothing (never sent, or a declared "not processed" error).
    """

    connector: str
    value: T | None = None
    error: ConnectorError | None = None
    nothing_charged: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        """The value, or a 503 ``unavailable`` for a caller that must answer now.

        Raises:
          Unavailable: the call failed; the message says whether it may have happened.
        """
        if self.error is None:
            return self.value  # type: ignore[return-value]
        if self.nothing_charged:
            raise Unavailable(f"The connector {self.connector} did not take the request; retry shortly.")
        raise Unavailable(f"The connector {self.connector} did not answer in time; retry shortly "
                          "(the request is idempotent at the connector).")


class ConnectorCaller:
    """Calls connectors by name for the whole process.

    Args:
      connectors: connector objects by name.
      breakers: the circuit breaker of each connector (missing: not gated, not fed).
      timeout_s: the connector timeout (``PAYCAST_CONNECTOR_TIMEOUT_S``).
    """

    def __init__(self, connectors: Mapping[str, object], breakers: Mapping[str, CircuitBreaker],
                 timeout_s: float) -> None:
        self.connectors = connectors
        self.breakers = breakers
        self.timeout_s = timeout_s

    async def call(self, name: str, op: Callable[[object], Awaitable[T]], *, what: str,
                   gate: bool = False) -> CallResult[T]:
        """Run ``op(connector)`` under the connector's timeout and breaker.

        Args:
          name: the connector's name.
          op: the call, e.g. ``lambda c: c.capture(txn, amount)``.
          what: a few words for the log (``"capture pay_…"``).
          gate: refuse when the circuit is open (calls that start new money
            movement: authorize, refund, payout). Follow-ups of money already
            moving (capture, void, retrieve) are never refused, only counted.

        Returns:
          The :class:`CallResult`; never raises a connector error.
        """
        connector = self.connectors.get(name)
        if connector is None:
            return CallResult(name, error=ConnectorUnavailable(f"connector {name!r} is not configured"),
                              nothing_charged=True)
        breaker = self.breakers.get(name)
        admitted = "call"
        if breaker is not None and gate:
            admitted = breaker.admit(trio.current_time())
            if admitted is None:
                return CallResult(name, error=CircuitOpen(f"the circuit of {name} is open"), nothing_charged=True)
        started = trio.current_time()
        ok = False
        try:
            try:
                with trio.fail_after(self.timeout_s):
                    value = await op(connector)
            except trio.TooSlowError:
                error: ConnectorError = ConnectorTimeout(f"{name} did not answer within {self.timeout_s:g}s")
            except ConnectorError as exc:
                error = exc
            else:
                ok = True
                return CallResult(name, value=value)
            log.warning("connector %s failed (%s): %s: %s", name, what, type(error).__name__, error)
            return CallResult(name, error=error, nothing_charged=nothing_charged(connector, error))
        finally:
            # Also on cancellation: a probe must always report back.
            if breaker is not None:
                now = trio.current_time()
                breaker.record(ok, now - started, now, probe=admitted == "probe")


def submission_of(result: CallResult, what: str):
    """A refund's or payout's :class:`~gateways.base.Submission` from its call.

    A definite "not processed" is ``failed`` (the reserved amount is
    released); anything else that went wrong may have reached the connector,
    so it stays ``pending`` (reserved) until its webhook or reconciliation.
    """
    from gateways.base import Submission

    if result.ok:
        return result.value
    if result.nothing_charged:
        return Submission("failed", None, result.error.code)
    log.warning("%s: outcome unknown at %s; pending until its webhook or reconciliation", what, result.connector)
    return Submission("pending")
