"""The messages of the payment actor family (:mod:`actors.payment`): what a
route, the inbox or the reconciler may ask of one payment."""

from __future__ import annotations

from dataclasses import dataclass

from storage.inbox import Seen
from storage.payments import Begun


@dataclass(frozen=True)
class Confirm:
    merchant_id: str
    begun: Begun | None = None  # set when create already started the attempt
    return_url: str | None = None  # where a customer action (3-D Secure) comes back to


@dataclass(frozen=True)
class Capture:
    merchant_id: str
    amount: int | None


@dataclass(frozen=True)
class Cancel:
    merchant_id: str


@dataclass(frozen=True)
class ApplyWebhook:
    """Apply one stored gateway webhook (from the inbox) to this payment."""

    inbox_id: str
    seen: Seen | None = None  # what the insert read for the apply, if it did
    claim: int | None = None  # the row's tries as the processor's claim left it (storage.inbox.apply)


@dataclass(frozen=True)
class Reconcile:
    """The payment is past its processing deadline: ask the connector."""

    merchant_id: str


@dataclass(frozen=True)
class Abandon:
    """The payment waited in ``requires_action`` past its action deadline: ask the
    gateway, and cancel it there (and here, ``abandoned``) if it still waits."""

    merchant_id: str


@dataclass(frozen=True)
class Refund:
    """Refund ``amount`` (``None``: everything left) of this payment."""

    merchant_id: str
    amount: int | None
    reason: str | None = None
    metadata: dict | None = None


@dataclass(frozen=True)
class SubmitDisputeEvidence:
    merchant_id: str
    dispute_id: str
    text: str


@dataclass(frozen=True)
class AcceptDispute:
    merchant_id: str
    dispute_id: str

