"""One way to call a connector: bounded, breaker-fed, errors typed.

Every connector call site (authorize, capture, void, retrieve, refund,
payout, dispute actions) goes through :meth:`ConnectorCaller.call`, so each
call is

* made on the right object: a simulator by name; a real connector (``stripe``,
  ``razorpay``) through the merchant's connector account the attempt recorded
  (``account_id``), built from its decrypted credentials
  (components/connector_accounts.py), even when that account is disabled now;

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
from typing import Generic, Protocol, TypeVar

import trio

from domain.breaker import CircuitBreaker
from domain.errors import Unavailable
from gateways.base import CircuitOpen, ConnectorError, ConnectorTimeout, ConnectorUnavailable, nothing_charged

log = logging.getLogger("paycast.connectors")
T = TypeVar("T")


class _AccountConnectors(Protocol):
    async def connector(self, account_id: str) -> object | None: ...


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
    """Calls connectors for the whole process: simulators by name, real connectors
    (``stripe``, ``razorpay``) by the merchant's connector account.

    Args:
      connectors: the simulated connector objects by name.
      breakers: the circuit breaker of each simulated connector (missing: not gated, not fed).
      timeout_s: the connector timeout (``PAYCAST_CONNECTOR_TIMEOUT_S``).
      accounts: resolves an account id to its connector object
        (``async connector(account_id) -> object | None``;
        components.connector_accounts.ConnectorAccounts).
      account_breaker: the circuit breaker of an account, ``(account_id, name) -> CircuitBreaker``
        (one per account: one merchant's failing gateway account does not open another's circuit).
      real_connectors: the names resolved through ``accounts``.
    """

    def __init__(self, connectors: Mapping[str, object], breakers: Mapping[str, CircuitBreaker],
                 timeout_s: float, *, accounts: _AccountConnectors | None = None,
                 account_breaker: Callable[[str, str], CircuitBreaker] | None = None,
                 real_connectors: frozenset[str] = frozenset()) -> None:
        self.connectors = connectors
        self.breakers = breakers
        self.timeout_s = timeout_s
        self.accounts = accounts
        self.account_breaker = account_breaker
        self.real_connectors = real_connectors

    async def connector_for(self, name: str, account_id: str | None = None) -> object | None:
        """The object a call to ``name`` would use (for capability reads such as
        ``partial_capture``), or None when there is none.

        Raises:
          Unavailable: the account could not be read now.
        """
        if name not in self.real_connectors:
            return self.connectors.get(name)
        if account_id is None or self.accounts is None:
            return None
        return await self.accounts.connector(account_id)

    async def call(self, name: str, op: Callable[[object], Awaitable[T]], *, what: str,
                   gate: bool = False, account_id: str | None = None) -> CallResult[T]:
        """Run ``op(connector)`` under the connector's timeout and breaker.

        Args:
          name: the connector's name.
          op: the call, e.g. ``lambda c: c.capture(txn, amount)``.
          what: a few words for the log (``"capture pay_…"``).
          gate: refuse when the circuit is open (calls that start new money
            movement: authorize, refund, payout). Follow-ups of money already
            moving (capture, void, retrieve) are never refused, only counted.
          account_id: for a real connector, the connector account the attempt
            records (``payment_attempts.connector_account_id``); its status does
            not matter (a disabled account's in-flight work still settles).

        Returns:
          The :class:`CallResult`; never raises a connector error.
        """
        try:
            connector = await self.connector_for(name, account_id)
        except Unavailable as exc:
            return CallResult(name, error=ConnectorUnavailable(f"the {name} account could not be read: {exc}"),
                              nothing_charged=True)
        if connector is None:
            missing = "is not configured" if name not in self.real_connectors else "has no connector account here"
            return CallResult(name, error=ConnectorUnavailable(f"connector {name!r} {missing}"),
                              nothing_charged=True)
        if name in self.real_connectors and self.account_breaker is not None:
            breaker = self.account_breaker(account_id, name)
        else:
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
