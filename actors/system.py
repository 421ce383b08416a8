"""The running system: database, connectors, breakers and the actors, owned by
one nursery. ``app/`` talks only to this object."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from actors.inbox import InboxProcessor, InboxWriter
from actors.payment import PaymentActor
from actors.realtime.gateway import RealtimeGateway
from actors.reconciler import run_reconciler
from actors.runtime import Registry, supervise
from config import Settings
from domain.breaker import CircuitBreaker
from domain.routing import RoutingConfig, candidates
from gateways.simulated import build_connectors
from gateways.simulator import WebhookSimulator
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
        self.simulator = WebhookSimulator(
            settings.secrets_by_connector, delay_ms=settings.sim_delay_ms,
            duplicate_rate=settings.sim_duplicate_rate, reorder=settings.sim_reorder,
        )
        self.connectors = build_connectors(settings.flaky_error_rate, self.simulator)
        self.inbox_processor = InboxProcessor(self)
        self.inbox_writer = InboxWriter(db, self.inbox_processor.wake)
        self.reconciled = 0
        self.known_connectors = frozenset(self.connectors)
        self.breakers = {name: CircuitBreaker(name) for name in self.connectors}
        self.payments: Registry[str] | None = None
        self._payment_actor = PaymentActor(self)
        # Importing the gateway registers the realtime projection of the event
        # log (storage.realtime), so events commit with their client messages.
        self.realtime = RealtimeGateway(settings, db)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the actors until cancelled; reports readiness once they accept work."""
        async with trio.open_nursery() as nursery:
            self.payments = Registry(
                nursery, "payment", self._payment_actor.handle,
                idle_s=self.settings.actor_idle_s, inbox_size=self.settings.actor_inbox_size,
            )
            nursery.start_soon(supervise, "janitor", self._janitor, name="actor:janitor")
            nursery.start_soon(supervise, "inbox-writer", self.inbox_writer.run, name="actor:inbox-writer")
            nursery.start_soon(supervise, "inbox-processor", self.inbox_processor.run,
                               name="actor:inbox-processor")
            nursery.start_soon(supervise, "reconciler", lambda: run_reconciler(self), name="actor:reconciler")
            await nursery.start(self.simulator.run, name="actor:webhook-simulator")
            await nursery.start(self.realtime.run, name="actor:realtime")
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

    def set_base_url(self, url: str) -> None:
        """Where the simulator sends gateway webhooks (this process's own HTTP edge)."""
        self.simulator.base_url = url

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
