"""Payments, refunds and disputes: the payment actors and what they call.

Everything that changes a payment goes through its actor (one per payment id,
:class:`actors.payment.PaymentActor`); refunds and disputes are messages to
the payment's actor. Hot-path writes are group-committed by the unit writer.
"""

from __future__ import annotations

import trio

from actors.connector_call import ConnectorCaller
from actors.payment import PaymentActor
from actors.payment_messages import ApplyWebhook
from actors.ports import PayoutRoute
from actors.runtime import Registry, supervise
from actors.unit_writer import UnitWriter
from components.routing import Routing
from config import Settings
from storage import disputes, inbox, payments, refunds
from storage.database import Database


class Payments:
    """The payment surface: the payment actors, group commit and the reads of
    payments, refunds and disputes.

    This object is also what the payment-side actors (payment, account,
    inbox processor, reconcilers, refunds, disputes) are given; each takes it
    as the protocol of :mod:`actors.ports` that says what it uses (the
    database, the settings, the connector caller, routing, group commit and
    the way to reach a payment's actor).

    Args:
      settings: timeouts, deadlines, actor sizes.
      db: the open database.
      routing: connector choice and breakers.
      connector_call: every connector call goes through it (timeout, breaker, typed errors).
    """

    def __init__(self, settings: Settings, db: Database, routing: Routing, connector_call: ConnectorCaller) -> None:
        self.settings = settings
        self.db = db
        self.routing = routing
        self.connector_call = connector_call
        self.writer = UnitWriter(db)
        self.reconciled = 0
        self.registry: Registry[str] | None = None
        self._actor = PaymentActor(self)

    def start(self, nursery: trio.Nursery) -> None:
        """Start the payment actors' registry and the group-commit writer in ``nursery``."""
        self.registry = Registry(nursery, "payment", self._actor.handle,
                                 idle_s=self.settings.actor_idle_s, inbox_size=self.settings.actor_inbox_size)
        nursery.start_soon(supervise, "unit-writer", self.writer.run, name="actor:unit-writers")

    # -- what the actors use -------------------------------------------------

    def router(self) -> payments.Route:
        """See :meth:`components.routing.Routing.router`."""
        return self.routing.router()

    def payout_router(self) -> PayoutRoute:
        """See :meth:`components.routing.Routing.payout_router`."""
        return self.routing.payout_router()

    async def routing_config(self, merchant_id: str) -> dict | None:
        """The merchant's routing policy (cached a few seconds)."""
        return await self.routing.cached_config(merchant_id)

    def candidates(self, routing: dict | None, method: dict, pinned: str | None) -> list[str]:
        """Connectors to try now for a payment with the stored ``method``, best first."""
        return self.routing.candidates(routing, method, pinned)

    async def write(self, merchant_id: str, fn, *args, rank: int = 1):
        """Run a hot-path unit of work through group commit (:class:`actors.unit_writer.UnitWriter`)."""
        return await self.writer.run_unit(merchant_id, self.settings.ask_timeout_s, fn, *args, rank=rank)

    async def ask_payment(self, payment_id: str, message: object) -> dict:
        """Ask the payment's actor and wait for its answer (bounded by ``ask_timeout_s``)."""
        assert self.registry is not None
        return await self.registry.ask(payment_id, message, self.settings.ask_timeout_s)

    async def apply_webhook(self, payment_id: str, inbox_id: str, seen: inbox.Seen | None = None,
                            claim: int | None = None) -> str:
        """Apply a stored gateway webhook about ``payment_id`` (:func:`storage.inbox.apply`).

        Through the payment's actor when one is running here (it may be in
        the middle of a confirm or capture of that payment); otherwise
        directly, without starting one: an actor started for one webhook would
        only idle for ``actor_idle_s``, thousands of them at a high webhook
        rate, all of it for the garbage collector to walk. Either way is exactly
        once: the apply's statements are guarded, as they must be against
        other processes.

        Args:
          seen: what the insert that stored the row read for its apply, if it did.
          claim: the row's ``tries`` as this process's claim left it (the apply is
            refused once another process claimed it since); None: no claim to check.

        Returns:
          The inbox row's status after the apply (see :func:`storage.inbox.apply`).
        """
        assert self.registry is not None
        if self.registry.is_live(payment_id):
            return await self.ask_payment(payment_id, ApplyWebhook(inbox_id, seen, claim))
        return await self.apply_stored_webhook(inbox_id, seen, claim)

    async def apply_stored_webhook(self, inbox_id: str, seen: inbox.Seen | None = None,
                                   claim: int | None = None) -> str:
        """The apply itself (:func:`storage.inbox.apply`), one unit of work, wherever it is called from.

        Args:
          seen: what the statement that stored or claimed the row read for its apply, if it did.
          claim: as for :meth:`apply_webhook`.
        """
        return await self.db.transaction(inbox.apply, inbox_id, self.settings.webhook_unmatched_grace_s, seen,
                                         claim)

    def tell_payment(self, payment_id: str, message: object) -> bool:
        """Hand ``message`` to the payment's actor without waiting for it."""
        assert self.registry is not None
        return self.registry.tell_nowait(payment_id, message)

    # -- what the routes use -------------------------------------------------

    async def create(self, merchant_id: str, spec: dict) -> dict:
        """Store a new payment awaiting confirmation (group-committed)."""
        return await self.write(merchant_id, payments.create, merchant_id, spec)

    async def create_and_confirm(self, merchant_id: str, spec: dict) -> dict:
        """Create a payment and confirm it in one go (``confirm: true``)."""
        return await self._actor.create_and_confirm(merchant_id, spec)

    async def get(self, merchant_id: str, payment_id: str) -> dict:
        return await self.db.transaction(payments.get, merchant_id, payment_id)

    async def list_page(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self.db.transaction(payments.list_page, merchant_id, **page)

    async def get_refund(self, merchant_id: str, refund_id: str) -> dict:
        return await self.db.transaction(refunds.get, merchant_id, refund_id)

    async def list_refunds(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self.db.transaction(refunds.list_page, merchant_id, **page)

    async def get_dispute(self, merchant_id: str, dispute_id: str) -> dict:
        return await self.db.transaction(disputes.get, merchant_id, dispute_id)

    async def dispute_row(self, merchant_id: str, dispute_id: str) -> dict:
        """The stored dispute row (raises not-found for another merchant's)."""
        return await self.db.transaction(disputes.fetch_row, merchant_id, dispute_id)

    async def list_disputes(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self.db.transaction(disputes.list_page, merchant_id, **page)

    async def dispute_balance(self, merchant_id: str) -> dict:
        return await self.db.transaction(disputes.merchant_balance, merchant_id)
