"""Refunds, sans-IO: the state machine as a table (domain/state_machine.py) and the amount rule.

A refund is ``pending`` from the moment it is accepted until the connector
says how it ended. Its amount counts against the payment at once (the
payment's ``amount_refunded`` includes pending refunds, as Stripe's does) and
is given back if the refund fails, so the sum of non-failed refunds can never
exceed what the payment received.
"""

from __future__ import annotations

import enum

from domain.errors import InvalidRequest, RefundExceedsPayment, StateError
from domain.state_machine import StateMachine


class Status(str, enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Trigger(str, enum.Enum):
    SUCCEED = "succeed"  # the connector returned the money
    FAIL = "fail"        # the connector could not return it


TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (Status.PENDING, Trigger.SUCCEED): Status.SUCCEEDED,
    (Status.PENDING, Trigger.FAIL): Status.FAILED,
}
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED})
# Stripe's reasons; anything else is a typo worth a 400.
REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# The connector webhook kinds that end a refund, by trigger.
WEBHOOK_TRIGGERS = {"refund.succeeded": Trigger.SUCCEED, "refund.failed": Trigger.FAIL}


MACHINE: StateMachine[Status, Trigger] = StateMachine("refund", Status, TRANSITIONS)
# A connector's answer for a refund that already ended (late or duplicate) has
# no edge: callers ask :func:`can` first and change nothing.
next_status = MACHINE.next_status
can = MACHINE.can


def refundable_payment(payment_status: str) -> None:
    """Only a payment that received money can be refunded.

    Raises:
      StateError: ``payment_unexpected_state`` for any other status.
    """
    if payment_status != "succeeded":
        raise StateError(f"You cannot refund this payment because it has a status of {payment_status}.")


def refund_amount(requested: int | None, amount_received: int, amount_refunded: int) -> int:
    """The amount of a new refund.

    Args:
      requested: what the merchant asked for; ``None`` means everything left.
      amount_received: what the payment received.
      amount_refunded: the sum of the payment's non-failed refunds so far.

    Returns:
      The amount to refund (positive).

    Raises:
      InvalidRequest: ``requested`` is not a positive integer (``param`` amount).
      RefundExceedsPayment: nothing is left, or ``requested`` is more than what is left.
    """
    remaining = amount_received - amount_refunded
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise InvalidRequest("Refund amount must be a positive integer in minor units.", param="amount")
    amount = remaining if requested is None else requested
    if remaining <= 0 or amount > remaining:
        raise RefundExceedsPayment(
            f"Refund amount ({amount}) is greater than the unrefunded amount of the payment ({max(remaining, 0)}).",
            param="amount",
        )
    return amount


def order_fully_refunded(amount_received: int, succeeded_refunds: int) -> bool:
    """True when the succeeded refunds give back everything the payment received
    (the moment its order becomes ``refunded``)."""
    return amount_received > 0 and succeeded_refunds >= amount_received
