"""A circuit breaker per connector (closed → open → half_open → closed) with a
sliding window of recent calls for success rate and latency. Time is passed in,
so the whole policy is testable without sleeping."""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class BreakerPolicy:
    window: int = 50               # recent calls remembered
    min_calls: int = 10            # below this many calls the rate is not trusted
    failure_threshold: float = 0.5  # open when the failure rate reaches this
    open_seconds: float = 10.0     # how long to refuse before probing again


class CircuitBreaker:
    """One connector's health.

    ``allow(now)`` says whether a call may go; ``record(ok, latency_s, now)``
    feeds the outcome back.
    """

    def __init__(self, name: str, policy: BreakerPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._calls: collections.deque[tuple[bool, float]] = collections.deque(maxlen=self.policy.window)
        self._opened_at: float | None = None
        self._probing = False
        self.attempts = 0

    def state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.policy.open_seconds:
            return "half_open"
        return "open"

    def allow(self, now: float) -> bool:
        """True if a call may be made now (in half_open, one probe at a time)."""
        return self.admit(now) is not None

    def admit(self, now: float) -> str | None:
        """Let a call through, saying how: ``"call"`` (closed), ``"probe"`` (the one
        half-open probe), or ``None`` (refused: open, or a probe is already out).

        Whoever is admitted as ``"probe"`` must report with ``record(..., probe=True)``
        (also when the call was cancelled), or the circuit stays half-open with
        its probe slot taken.
        """
        state = self.state(now)
        if state == "closed":
            return "call"
        if state == "half_open" and not self._probing:
            self._probing = True
            return "probe"
        return None

    def record(self, ok: bool, latency_s: float, now: float, *, probe: bool | None = None) -> None:
        """Feed one call's outcome back.

        Args:
          probe: True for the half-open probe admitted by :meth:`admit`, False for
            an ordinary call (whose result, if it lands while the circuit is open,
            only counts in the statistics: it cannot close or re-open the circuit,
            nor free the probe slot). ``None``: legacy callers of :meth:`allow`,
            any result while open is taken as the probe's.
        """
        self.attempts += 1
        self._calls.append((ok, latency_s))
        if self._opened_at is not None:
            if probe is False:
                return
            self._probing = False
            if ok and self.state(now) == "half_open":
                self._opened_at = None
                self._calls.clear()
                self._calls.append((ok, latency_s))
            elif not ok:
                self._opened_at = now
            return
        if len(self._calls) >= self.policy.min_calls and 1 - self.success_rate() >= self.policy.failure_threshold:
            self._opened_at = now

    def success_rate(self) -> float:
        if not self._calls:
            return 1.0
        return sum(1 for ok, _ in self._calls if ok) / len(self._calls)

    def latency_ms_p50(self) -> float | None:
        if not self._calls:
            return None
        return round(statistics.median(lat for _, lat in self._calls) * 1000, 3)

    def snapshot(self, now: float) -> dict:
        return {"object": "connector", "name": self.name, "state": self.state(now),
                "success_rate": round(self.success_rate(), 4), "latency_ms_p50": self.latency_ms_p50(),
                "attempts": self.attempts}
