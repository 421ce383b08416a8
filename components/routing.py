"""Merchants' routing and the connectors' circuit breakers.

Owns the breakers (one per connector), the merchants' stored routing policy
(read through a short cache) and the pure routing functions the payment and
account actors run on the database thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

from config import Settings
from domain.breaker import BreakerPolicy, CircuitBreaker
from domain.routing import RoutingConfig, candidates
from storage import merchants
from storage.database import Database

# How long a merchant's routing policy is cached (another process's change is
# seen after at most this long).
_ROUTING_TTL_S = 2.0


class Routing:
    """Which connector a payment or payout goes to.

    Args:
      settings: breaker thresholds come from here.
      db: where merchants' routing policies are stored.
      connector_names: the simulated connectors this process can call.
      real_connectors: the real connectors (``stripe``, ``razorpay``): known to
        routing configurations, called through a merchant's connector account,
        one breaker per account (:meth:`account_breaker`).
    """

    def __init__(self, settings: Settings, db: Database, connector_names: Iterable[str],
                 real_connectors: Iterable[str] = ()) -> None:
        self._db = db
        names = list(connector_names)  # breakers keep the connectors' order (GET /v1/connectors)
        self.real_connectors = frozenset(real_connectors)
        self.known_connectors = frozenset(names) | self.real_connectors
        policy = BreakerPolicy(min_calls=settings.breaker_min_calls,
                               failure_threshold=settings.breaker_failure_threshold,
                               open_seconds=settings.breaker_open_s)
        self._policy = policy
        self.breakers = {name: CircuitBreaker(name, policy) for name in names}
        self._account_breakers: dict[str, CircuitBreaker] = {}
        self._cache: dict[str, tuple[float, dict | None]] = {}

    def account_breaker(self, account_id: str, name: str) -> CircuitBreaker:
        """The circuit breaker of one connector account (made on first use; named
        after the connector, so its snapshot reads like a simulator's)."""
        breaker = self._account_breakers.get(account_id)
        if breaker is None:
            breaker = self._account_breakers[account_id] = CircuitBreaker(name, self._policy)
        return breaker

    def _open_circuits(self) -> frozenset[str]:
        now = trio.current_time()
        return frozenset(n for n, b in self.breakers.items() if b.state(now) == "open")

    def router(self):
        """A pure routing function over snapshots taken now (safe to call on the DB thread)."""
        unavailable = self._open_circuits()
        rates = {n: b.success_rate() for n, b in self.breakers.items()}
        known = self.known_connectors

        def route(row: Mapping, routing: dict | None) -> list[str]:
            config = RoutingConfig.from_dict(routing, known)
            method = row["payment_method"]
            return candidates(config, method.get("type", "card"), pinned=row["pinned_connector"],
                              unavailable=unavailable, success_rates=rates, method=method)

        return route

    def candidates(self, routing: dict | None, method: dict, pinned: str | None) -> list[str]:
        """Connectors to try now for a payment with the stored ``method``, best first
        (see :func:`domain.routing.candidates`)."""
        return self.router()({"payment_method": method, "pinned_connector": pinned}, routing)

    def payout_router(self):
        """A pure function from a merchant's routing config to payout connectors.

        Payouts follow the merchant's ``connectors`` priority (or a rule for
        ``"payment_method_type": "payout"``), open circuits last.
        """
        unavailable = self._open_circuits()
        known = self.known_connectors

        def route(routing: dict | None) -> list[str]:
            return candidates(RoutingConfig.from_dict(routing, known), "payout", unavailable=unavailable)

        return route

    async def cached_config(self, merchant_id: str) -> dict | None:
        """The merchant's stored routing, cached for a few seconds.

        Another process's ``PUT /v1/routing`` is seen within ``_ROUTING_TTL_S``;
        this process's own is seen at once (:meth:`store`).
        """
        now = trio.current_time()
        cached = self._cache.get(merchant_id)
        if cached is not None and now - cached[0] < _ROUTING_TTL_S:
            return cached[1]
        routing = await self._db.transaction(merchants.routing, merchant_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[merchant_id] = (now, routing)
        return routing

    async def config(self, merchant_id: str) -> RoutingConfig:
        """The merchant's routing as stored now (not cached), with defaults filled in."""
        stored = await self._db.transaction(merchants.routing, merchant_id)
        return RoutingConfig.from_dict(stored, self.known_connectors)

    async def store(self, merchant_id: str, stored: dict) -> None:
        """Replace the merchant's routing; this process sees it at once."""
        await self._db.transaction(merchants.set_routing, merchant_id, stored)
        self._cache.pop(merchant_id, None)

    def health(self, now: float) -> dict[str, dict]:
        """Each connector's breaker snapshot, by connector name."""
        return {name: breaker.snapshot(now) for name, breaker in self.breakers.items()}
