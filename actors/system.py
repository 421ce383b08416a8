"""The running system: database, connectors, breakers and the actors, owned by
one nursery. ``app/`` talks only to this object."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from actors.account import AccountActor
from actors.connector_call import ConnectorCaller
from actors.inbox import InboxProcessor, InboxWriter
from actors.maintenance import PartitionMaintainer
from actors.payment import PaymentActor
from actors.realtime.gateway import RealtimeGateway
from actors.pending_reconciler import run_pending_reconciler
from actors.reconciler import run_reconciler
from actors.runtime import Registry, supervise
from actors.unit_writer import UnitWriter
from actors.wakeups import Topic, Wakeups
from actors.webhook_dispatcher import WebhookDispatcher
from config import Settings
from config.roles import Part, parts_of
from domain.breaker import BreakerPolicy, CircuitBreaker
from domain.routing import RoutingConfig, candidates
from gateways.instrumented import instrument
from gateways.simulated import build_connectors
from gateways.simulator import WebhookSimulator
from storage import accounts, events, idempotency, merchants, payments
from storage import realtime as realtime_log
from storage.database import Database

log = logging.getLogger("paycast.system")

# How often old idempotency keys are purged; they are kept ≥ 24 h anyway.
_PURGE_EVERY_S = 3600
# How long a merchant's routing policy is cached (another process's change is
# seen after at most this long).
_ROUTING_TTL_S = 2.0


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
        # What this process runs (config/roles.py); run() starts only those actors.
        self.parts = parts_of(settings.role)
        self.simulator = WebhookSimulator(
            settings.secrets_by_connector, delay_ms=settings.sim_delay_ms,
            duplicate_rate=settings.sim_duplicate_rate, reorder=settings.sim_reorder,
        )
        # Wrapped once so every connector call is traced and counted (gateways.instrumented).
        self.connectors = instrument(build_connectors(settings.flaky_error_rate, self.simulator))
        self.inbox_processor = InboxProcessor(self)
        self.inbox_writer = InboxWriter(db, lambda: self.wakeups.wake(Topic.INBOX))
        self.writer = UnitWriter(db)
        self.reconciled = 0
        self._routing: dict[str, tuple[float, dict | None]] = {}
        self.known_connectors = frozenset(self.connectors)
        policy = BreakerPolicy(min_calls=settings.breaker_min_calls,
                               failure_threshold=settings.breaker_failure_threshold,
                               open_seconds=settings.breaker_open_s)
        self.breakers = {name: CircuitBreaker(name, policy) for name in self.connectors}
        self.connector_call = ConnectorCaller(self.connectors, self.breakers, settings.connector_timeout_s)
        self.payments: Registry[str] | None = None
        self._payment_actor = PaymentActor(self)
        self.accounts: Registry[str] | None = None
        self._account_actor = AccountActor(self)
        self.webhook_dispatcher = WebhookDispatcher(db, allow_private_urls=settings.webhook_allow_private_urls,
                                                    resolve=resolve_host, retry_schedule=settings.retry_schedule)
        # Work stored here for an actor another process runs wakes it through NOTIFY.
        local = {Topic.INBOX: self.inbox_processor.wake} if Part.INBOX in self.parts else {}
        if Part.WEBHOOKS_OUT in self.parts:
            local[Topic.DELIVERIES] = self.webhook_dispatcher.wake
        self.wakeups = Wakeups(db, local, timeout_s=settings.db_connect_timeout_s)
        self.maintainer = PartitionMaintainer(db, settings)
        self.realtime = RealtimeGateway(settings, db)
        register_followers_and_projections()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run this role's actors until cancelled; reports readiness once they accept work.

        Which actors run is :data:`config.roles.ROLE_PARTS` for the process's role.
        """
        parts = self.parts
        async with trio.open_nursery() as nursery:
            if Part.PAYMENTS in parts:
                self.payments = Registry(
                    nursery, "payment", self._payment_actor.handle,
                    idle_s=self.settings.actor_idle_s, inbox_size=self.settings.actor_inbox_size,
                )
                self.accounts = Registry(
                    nursery, "account", self._account_actor.handle,
                    idle_s=self.settings.actor_idle_s, inbox_size=self.settings.actor_inbox_size,
                )
                nursery.start_soon(supervise, "unit-writer", self.writer.run, name="actor:unit-writers")
                await nursery.start(self.simulator.run, name="actor:webhook-simulator")
            if Part.WEBHOOKS_IN in parts:
                nursery.start_soon(supervise, "inbox-writer", self.inbox_writer.run, name="actor:inbox-writer")
            if Part.INBOX in parts:
                nursery.start_soon(supervise, "inbox-processor", self.inbox_processor.run,
                                   name="actor:inbox-processor")
            if Part.RECONCILER in parts:
                nursery.start_soon(supervise, "reconciler", lambda: run_reconciler(self), name="actor:reconciler")
                nursery.start_soon(supervise, "pending-reconciler", lambda: run_pending_reconciler(self),
                                   name="actor:pending-reconciler")
            if Part.WEBHOOKS_OUT in parts:
                nursery.start_soon(supervise, "webhook-dispatcher", self.webhook_dispatcher.run,
                                   name="actor:webhook-dispatcher")
            if Part.MAINTENANCE in parts:
                nursery.start_soon(supervise, "janitor", self._janitor, name="actor:janitor")
                nursery.start_soon(supervise, "partitions", self.maintainer.run, name="actor:partitions")
            if Part.REALTIME in parts:
                await nursery.start(self.realtime.run, name="actor:realtime")
            if self.wakeups.sends:
                nursery.start_soon(supervise, "wake-sender", self.wakeups.run_sender, name="actor:wake-sender")
            if self.wakeups.listens:
                await nursery.start(self.wakeups.run_listener, name="actor:wake-listener")
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
        """Where the simulator sends gateway webhooks: ``PAYCAST_SIM_WEBHOOK_URL``, else
        this process's own HTTP edge."""
        self.simulator.base_url = (self.settings.sim_webhook_url or url).rstrip("/")
        if self.settings.sim_webhook_url is None and Part.PAYMENTS in self.parts \
                and Part.WEBHOOKS_IN not in self.parts:
            log.warning("role %s does not serve /webhooks: set PAYCAST_SIM_WEBHOOK_URL to an api process's URL "
                        "so simulated gateway webhooks reach an inbox", self.settings.role)

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
            return candidates(config, row["payment_method"].get("type", "card"),
                              pinned=row["pinned_connector"], unavailable=unavailable, success_rates=rates)

        return route

    def candidates(self, routing: dict | None, method_type: str, pinned: str | None) -> list[str]:
        """Connectors to try now for a payment, best first (see :func:`domain.routing.candidates`)."""
        return self.router()({"payment_method": {"type": method_type}, "pinned_connector": pinned}, routing)

    async def routing_config(self, merchant_id: str) -> dict | None:
        """The merchant's stored routing, cached for a few seconds.

        Another process's ``PUT /v1/routing`` is seen within ``_ROUTING_TTL_S``;
        this process's own is seen at once (:meth:`forget_routing`).
        """
        now = trio.current_time()
        cached = self._routing.get(merchant_id)
        if cached is not None and now - cached[0] < _ROUTING_TTL_S:
            return cached[1]
        routing = await self.db.transaction(merchants.routing, merchant_id)
        if len(self._routing) > 10_000:
            self._routing.clear()
        self._routing[merchant_id] = (now, routing)
        return routing

    def forget_routing(self, merchant_id: str) -> None:
        self._routing.pop(merchant_id, None)

    async def create_and_confirm(self, merchant_id: str, spec: dict) -> dict:
        return await self._payment_actor.create_and_confirm(merchant_id, spec)

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

    async def write(self, merchant_id: str, fn, *args):
        """Run a hot-path unit of work through group commit (:class:`actors.unit_writer.UnitWriter`)."""
        return await self.writer.run_unit(merchant_id, self.settings.ask_timeout_s, fn, *args)

    async def ask_payment(self, payment_id: str, message: object) -> dict:
        assert self.payments is not None
        return await self.payments.ask(payment_id, message, self.settings.ask_timeout_s)

    def tell_payment(self, payment_id: str, message: object) -> bool:
        """Hand ``message`` to the payment's actor without waiting for it."""
        assert self.payments is not None
        return self.payments.tell_nowait(payment_id, message)

    async def ask_account(self, account_id: str, message: object) -> dict:
        assert self.accounts is not None
        return await self.accounts.ask(account_id, message, self.settings.ask_timeout_s)


def register_followers_and_projections() -> None:
    """What commits with a change, registered here and nowhere else, in this order.

    - With a payment's status change: its order (paid / payment_failed), then
      the wallet deposit it funds (credited / failed).
    - With every appended event, after its outgoing webhook deliveries (a CTE
      of the appending statement, storage.webhook_deliveries): the realtime
      log of the customer it concerns (storage.realtime).
    """
    payments.FOLLOWERS[:] = [payments.ORDER_FOLLOWER, accounts.DEPOSIT_FOLLOWER]
    events.PROJECTIONS[:] = [realtime_log.project]


async def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (for the private-URL check)."""
    infos = await trio.socket.getaddrinfo(host, None)
    return sorted({info[4][0] for info in infos})
