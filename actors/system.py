"""The running system: database, connectors, breakers and the actors, owned by
one nursery. ``app/`` talks only to this object."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from actors.payment import PaymentActor
from actors.runtime import Registry, supervise
from config import Settings
from domain.breaker import CircuitBreaker
from domain.routing import RoutingConfig, candidates
from gateways.simulated import build_connectors
from storage import idempotency
from storage.database import Database

log = logging.getLogger("paycast.system")

# How often old idempotency keys are purged; they are kept ≥ 24 h anyway.
_PURGE_EVERY_S = 3600


class System:
    """Everything a request handler may ask for.

    Args:
      settings: the process settings.
      db: an open :class:`Database`.
      nursery: the root nursery; actors live in a child nursery of it.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.connectors = build_connectors(settings.flaky_error_rate)
        self.known_connectors = frozenset(self.connectors)
        self.breakers = {name: CircuitBreaker(name) for name in self.connectors}
        self.payments: Registry[str] | None = None
        self._payment_actor = PaymentActor(self)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the actors until cancelled; reports readiness once they accept work."""
        async with trio.open_nursery() as nursery:
            self.payments = Registry(
                nursery, "payment", self._payment_actor.handle,
                idle_s=self.settings.actor_idle_s, inbox_size=self.settings.actor_inbox_size,
            )
            nursery.start_soon(supervise, "janitor", self._janitor, name="actor:janitor")
            task_status.started()

    async def _janitor(self) -> None:
        while True:
            try:
                purged = await self.db.transaction(idempotency.purge)
                if purged:
                    log.info("purged %d old idempotency keys", purged)
            except Exception as exc:  # noqa: BLE001 - the database may be down; try later
                log.warning("idempotency purge skipped: %s", exc)
            await trio.sleep(_PURGE_EVERY_S)

    def router_for(self, merchant_id: str):
        """A pure routing function over snapshots taken now (safe to call on the DB thread)."""
        now = trio.current_time()
        unavailable = frozenset(n for n, b in self.breakers.items() if b.state(now) == "open")
        rates = {n: b.success_rate() for n, b in self.breakers.items()}
        known = self.known_connectors

        def route(row: Mapping, routing: dict | None) -> list[str]:
            config = RoutingConfig.from_dict(routing, known)
            return candidates(config, row["payment_method"].get("type", "card"),
                              pinned=row["pinned_connector"], unavailable=unavailable, success_rates=rates)

        return route

    async def ask_payment(self, payment_id: str, message: object) -> dict:
        assert self.payments is not None
        return await self.payments.ask(payment_id, message, self.settings.ask_timeout_s)
