"""Event construction: one event per state change, typed ``<object>.<what>``."""

from __future__ import annotations

from dataclasses import dataclass

EVENT_TYPES = frozenset(
    {
        "payment.created", "payment.processing", "payment.succeeded", "payment.failed",
        "payment.requires_capture", "payment.canceled", "payment.review_required",
        "payment.requires_action",  # v1.2: the customer must act (next_action says how)
        "order.paid", "order.payment_failed",
        "refund.succeeded", "refund.failed", "refund.review_required",
        "dispute.opened", "dispute.won", "dispute.lost", "dispute.accepted",
        "account.deposit.completed", "account.deposit.failed",
        "account.withdrawal.completed", "account.withdrawal.failed", "account.withdrawal.review_required",
    }
)


@dataclass(frozen=True)
class NewEvent:
    """An event to write in the same transaction as the change it describes."""

    type: str
    object_id: str
    snapshot: dict
    customer_id: str | None = None
    # The W3C trace context of the change, when it is not the writer's own
    # (a group commit writes several requests' changes in one transaction).
    traceparent: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")


def payment_event(status: str, snapshot: dict) -> NewEvent:
    """The event for a payment that just reached ``status``."""
    return NewEvent(f"payment.{status}", snapshot["id"], snapshot, snapshot.get("customer_id"))


def order_event(status: str, snapshot: dict) -> NewEvent:
    """The event for an order that just reached ``status`` (``paid``/``payment_failed``)."""
    return NewEvent(f"order.{status}", snapshot["id"], snapshot, snapshot.get("customer_id"))
