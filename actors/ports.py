"""What each payment-side actor needs of the running system, one Protocol each.

The actors are given the payment side (:class:`components.payments.Payments`
provides every protocol here) but use only part of it; each protocol is that
part, written from the actor's side, so the edge from an actor back up to the
component is a type you can follow rather than an untyped ``payments``.

=================================  ==========================================
consumer                           protocol
=================================  ==========================================
actors/payment.py ``PaymentActor``  :class:`PaymentSide`
actors/refunding.py, disputing.py  :class:`ConnectorWork`
actors/account.py ``AccountActor``  :class:`AccountSide`
actors/inbox.py ``InboxProcessor``  :class:`InboxApplies`
actors/reconciler.py               :class:`Reconciling`
actors/pending_reconciler.py       :class:`PendingChecks`
=================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from actors.connector_call import ConnectorCaller
from config import Settings
from storage.database import Database
from storage.inbox import Seen
from storage.payments import Route

T = TypeVar("T")

# A merchant's routing config -> payout connectors, best first.
PayoutRoute = Callable[[dict | None], list[str]]


class ConnectorWork(Protocol):
    """A unit of work and a connector call: a refund (actors/refunding.py) or a
    dispute's evidence or acceptance (actors/disputing.py)."""

    db: Database
    connector_call: ConnectorCaller


class Reconciling(Protocol):
    """actors/reconciler.py: finds payments past their deadline and asks their actors."""

    db: Database
    settings: Settings

    async def ask_payment(self, payment_id: str, message: object) -> dict:
        """Ask the payment's actor and wait for its answer."""


class PendingChecks(Protocol):
    """actors/pending_reconciler.py: asks connectors about refunds and payouts still pending."""

    db: Database
    settings: Settings
    connector_call: ConnectorCaller


class InboxApplies(Protocol):
    """actors/inbox.py ``InboxProcessor``: applies stored gateway webhooks."""

    db: Database
    settings: Settings

    async def apply_webhook(self, payment_id: str, inbox_id: str, seen: Seen | None = None,
                            claim: int | None = None) -> str:
        """Apply a stored webhook about ``payment_id``, through its actor when one runs here."""

    async def apply_stored_webhook(self, inbox_id: str, seen: Seen | None = None,
                                   claim: int | None = None) -> str:
        """Apply a stored webhook that names no payment (one unit of work)."""


class AccountSide(Protocol):
    """actors/account.py ``AccountActor``: deposits (a payment confirmed by its
    actor) and withdrawals (a payout through a connector)."""

    db: Database
    settings: Settings
    connector_call: ConnectorCaller

    def router(self) -> Route:
        """Candidate connectors for a payment, over breakers' state taken now."""

    def payout_router(self) -> PayoutRoute:
        """Payout connectors for a merchant's routing config."""

    def tell_payment(self, payment_id: str, message: object) -> bool:
        """Hand ``message`` to the payment's actor without waiting."""


class PaymentSide(ConnectorWork, Protocol):
    """actors/payment.py ``PaymentActor``: confirm, capture, cancel, reconcile,
    refunds and disputes (:class:`ConnectorWork`) of one payment."""

    settings: Settings
    # Payments the reconciliation resolved (a gauge of /metrics).
    reconciled: int

    async def write(self, merchant_id: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a hot-path unit of work through group commit."""

    def router(self) -> Route:
        """Candidate connectors for a payment, over breakers' state taken now."""

    async def routing_config(self, merchant_id: str) -> dict | None:
        """The merchant's routing policy (cached a few seconds)."""

    def candidates(self, routing: dict | None, method: dict, pinned: str | None) -> list[str]:
        """Connectors to try now for a payment with the stored ``method``, best first."""

    async def ask_payment(self, payment_id: str, message: object) -> dict:
        """Ask the payment's actor and wait for its answer."""

    async def apply_stored_webhook(self, inbox_id: str, seen: Seen | None = None,
                                   claim: int | None = None) -> str:
        """Apply a stored gateway webhook (one unit of work)."""
