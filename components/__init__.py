"""The component factory: one typed, frozen set of components per process.

:func:`build_components` wires each surface of Paycast from explicit
dependencies — no component reaches into a shared object — and registers what
commits alongside a change (followers and projections), in an order you can
read below. :meth:`Components.run` starts only the actors the process's role
needs (config/roles.py).

Dependencies, in build order::

    secrets ── connector accounts (per-account real connectors) ─┐
    connectors ─┬─ routing (breakers, merchants' routing)         │
                └─ connector caller ──────────────────────────────┴─ payments ─┬─ accounts
                                                ├─ inbox ── wakeups
                                                └─ (reconcilers)
    webhooks_out ── wakeups;  realtime;  maintenance;  rollups (console reads)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from actors.connector_call import ConnectorCaller
from actors.pending_reconciler import run_pending_reconciler
from actors.realtime.gateway import RealtimeGateway
from actors.reconciler import run_reconciler
from actors.rollups import RollupFolder
from actors.runtime import supervise
from actors.wakeups import Topic, Wakeups
from components.accounts import Accounts
from components.connector_accounts import REGISTRY as REAL_CONNECTORS, ConnectorAccounts
from components.inbox import Inbox
from components.maintenance import Maintenance
from components.merchants import Merchants
from components.payments import Payments
from components.routing import Routing
from components.operations import IdempotencyKeys, Operations
from components.reads import Console, Events, Orders, ReconciliationReports
from components.webhooks_out import WebhooksOut
from config import Settings
from config.roles import Part, parts_of
from gateways.instrumented import instrument
from gateways.simulated import build_connectors
from gateways.simulator import WebhookSimulator
from storage import accounts, payments
from storage import realtime as realtime_log
from storage.database import Commits, Database
from storage.secrets_box import SecretsBox, load_box

__all__ = ["Components", "Connectors", "build_components", "simulated_connectors"]

log = logging.getLogger("paycast.system")


@dataclass(frozen=True)
class Connectors:
    """The connectors this process calls, by name, and the simulator that plays their webhooks."""

    by_name: Mapping[str, Any]
    simulator: WebhookSimulator


def simulated_connectors(settings: Settings) -> Connectors:
    """The built-in simulated connectors, each traced and counted (gateways.instrumented)."""
    simulator = WebhookSimulator(settings.secrets_by_connector, delay_ms=settings.sim_delay_ms,
                                 duplicate_rate=settings.sim_duplicate_rate, reorder=settings.sim_reorder)
    return Connectors(instrument(build_connectors(settings.flaky_error_rate, simulator)), simulator)


@dataclass(frozen=True)
class Components:
    """Everything a request handler may ask for, one attribute per surface."""

    settings: Settings
    db: Database
    parts: frozenset[Part]
    connectors: Connectors
    secrets: SecretsBox
    connector_accounts: ConnectorAccounts
    routing: Routing
    merchants: Merchants
    payments: Payments
    accounts: Accounts
    orders: Orders
    events: Events
    console: Console
    reconciliation_reports: ReconciliationReports
    inbox: Inbox
    webhooks_out: WebhooksOut
    realtime: RealtimeGateway
    maintenance: Maintenance
    operations: Operations
    idempotency_keys: IdempotencyKeys
    wakeups: Wakeups
    rollups: RollupFolder

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run this role's actors until cancelled; reports readiness once they accept work.

        Which actors run is :data:`config.roles.ROLE_PARTS` for the process's role.
        """
        parts = self.parts
        try:
            await self._run_parts(parts, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await self.connector_accounts.aclose()

    async def _run_parts(self, parts: frozenset[Part], task_status: trio.TaskStatus) -> None:
        async with trio.open_nursery() as nursery:
            if Part.PAYMENTS in parts:
                self.payments.start(nursery)
                self.accounts.start(nursery)
                await nursery.start(self.connectors.simulator.run, name="actor:webhook-simulator")
            if Part.WEBHOOKS_IN in parts:
                nursery.start_soon(supervise, "inbox-writer", self.inbox.writer.run, name="actor:inbox-writer")
            if Part.INBOX in parts:
                nursery.start_soon(supervise, "inbox-processor", self.inbox.processor.run,
                                   name="actor:inbox-processor")
            if Part.RECONCILER in parts:
                nursery.start_soon(supervise, "reconciler", lambda: run_reconciler(self.payments),
                                   name="actor:reconciler")
                nursery.start_soon(supervise, "pending-reconciler", lambda: run_pending_reconciler(self.payments),
                                   name="actor:pending-reconciler")
            if Part.WEBHOOKS_OUT in parts:
                nursery.start_soon(supervise, "webhook-dispatcher", self.webhooks_out.dispatcher.run,
                                   name="actor:webhook-dispatcher")
            if Part.MAINTENANCE in parts:
                self.maintenance.start(nursery)
            if Part.ROLLUPS in parts:
                nursery.start_soon(supervise, "rollups", self.rollups.run, name="actor:rollups")
            if Part.REALTIME in parts:
                await nursery.start(self.realtime.run, name="actor:realtime")
            if self.wakeups.sends:
                nursery.start_soon(supervise, "wake-sender", self.wakeups.run_sender, name="actor:wake-sender")
            if self.wakeups.listens:
                await nursery.start(self.wakeups.run_listener, name="actor:wake-listener")
            task_status.started()

    def set_base_url(self, url: str) -> None:
        """Where the simulator sends gateway webhooks: ``PAYCAST_SIM_WEBHOOK_URL``, else
        this process's own HTTP edge."""
        self.connectors.simulator.base_url = (self.settings.sim_webhook_url or url).rstrip("/")
        if self.settings.sim_webhook_url is None and Part.PAYMENTS in self.parts \
                and Part.WEBHOOKS_IN not in self.parts:
            log.warning("role %s does not serve /webhooks: set PAYCAST_SIM_WEBHOOK_URL to an api process's URL "
                        "so simulated gateway webhooks reach an inbox", self.settings.role)


def build_components(settings: Settings, db: Database, connectors: Connectors | None = None, *,
                     secrets: SecretsBox | None = None) -> Components:
    """Wire the components of one process.

    Args:
      settings: the process settings (its role decides what :meth:`Components.run` starts).
      db: an open :class:`Database`.
      connectors: the simulated connectors to call; default :func:`simulated_connectors`.
      secrets: the key ring of secrets at rest, already checked against the database
        (``run.py`` opens it with :func:`storage.secrets_box.prepare`); default: loaded
        from the settings, unchecked.

    Returns:
      The components, not yet running (start them with :meth:`Components.run`).
    """
    register_followers_and_projections(db)
    parts = parts_of(settings.role)
    connectors = connectors or simulated_connectors(settings)
    secrets = secrets or load_box(settings.secrets_key, external_database=bool(settings.database_url),
                                  data_dir=settings.data_dir)
    connector_accounts = ConnectorAccounts(settings, db, secrets)
    routing = Routing(settings, db, connectors.by_name, real_connectors=REAL_CONNECTORS)
    caller = ConnectorCaller(connectors.by_name, routing.breakers, settings.connector_timeout_s,
                             accounts=connector_accounts, account_breaker=routing.account_breaker,
                             real_connectors=routing.real_connectors)
    payments_ = Payments(settings, db, routing, caller)
    # Stored work for an actor another process runs wakes it through NOTIFY;
    # `wakeups` is bound below, before anything can store work.
    inbox = Inbox(db, payments_, on_stored=lambda: wakeups.wake(Topic.INBOX), applies_here=Part.INBOX in parts)
    webhooks_out = WebhooksOut(settings, db, wake_dispatcher=lambda: wakeups.wake(Topic.DELIVERIES), box=secrets)
    local = {}
    if Part.INBOX in parts:
        local[Topic.INBOX] = inbox.processor.wake
    if Part.WEBHOOKS_OUT in parts:
        local[Topic.DELIVERIES] = webhooks_out.dispatcher.wake
    wakeups = Wakeups(db, local, timeout_s=settings.db_connect_timeout_s)
    return Components(
        settings=settings, db=db, parts=parts, connectors=connectors, secrets=secrets,
        connector_accounts=connector_accounts, routing=routing,
        merchants=Merchants(db), payments=payments_, accounts=Accounts(settings, db, payments_),
        orders=Orders(db), events=Events(db), console=Console(db, settings.realtime_presence_ttl_s),
        reconciliation_reports=ReconciliationReports(db),
        inbox=inbox, webhooks_out=webhooks_out, realtime=RealtimeGateway(settings, db, secrets),
        maintenance=Maintenance(settings, db), operations=Operations(db),
        idempotency_keys=IdempotencyKeys(payments_.write),
        wakeups=wakeups, rollups=RollupFolder(db, settings.rollup_interval_s),
    )


# What commits with a change, in the order it runs:
# - with a payment's status change: its order (paid / payment_failed), then
#   the wallet deposit it funds (credited / failed);
# - with every appended event, after its outgoing webhook deliveries (a CTE
#   of the appending statement, storage.webhook_deliveries): the realtime log
#   of the customer it concerns (storage.realtime, CTEs of the same statement).
COMMITS = Commits(followers=(payments.ORDER_FOLLOWER, accounts.DEPOSIT_FOLLOWER),
                  projections=(realtime_log.EVENTS_PROJECTION,))


def register_followers_and_projections(db: Database) -> None:
    """The factory's registration step: what commits with a change made through
    ``db`` (:data:`COMMITS`), given to the database here and nowhere else."""
    db.register_commits(COMMITS)
