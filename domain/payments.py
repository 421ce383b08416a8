"""The payment state machine, as data (domain/state_machine.py).

``TRANSITIONS`` is the whole truth about which status may follow which; every
write in storage is a conditional update from the status this module says is
legal, so the table and the database agree even across processes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.errors import InvalidRequest
from domain.state_machine import StateMachine


class Status(str, enum.Enum):
    REQUIRES_CONFIRMATION = "requires_confirmation"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"  # v1.2: the customer must act (3-D Secure, a checkout)
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Trigger(str, enum.Enum):
    CONFIRM = "confirm"          # a confirm starts a connector attempt
    SUCCEED = "succeed"          # the connector charged the payment
    AUTHORIZE = "authorize"      # the connector authorised a manual-capture payment
    FAIL = "fail"                # the connector declined, or the attempt failed for good
    CAPTURE = "capture"          # the merchant captured an authorisation
    CANCEL = "cancel"            # the merchant canceled (or the gateway did: an abandoned action)
    REQUIRE_ACTION = "require_action"  # the connector wants the customer to act (3-D Secure, a checkout)
    RESUME = "resume"            # the customer acted; the gateway is still working on it


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (Status.REQUIRES_CONFIRMATION, Trigger.CONFIRM): Status.PROCESSING,
    (Status.REQUIRES_CONFIRMATION, Trigger.CANCEL): Status.CANCELED,
    (Status.PROCESSING, Trigger.SUCCEED): Status.SUCCEEDED,
    (Status.PROCESSING, Trigger.AUTHORIZE): Status.REQUIRES_CAPTURE,
    (Status.PROCESSING, Trigger.FAIL): Status.FAILED,
    (Status.REQUIRES_CAPTURE, Trigger.CAPTURE): Status.SUCCEEDED,
    (Status.REQUIRES_CAPTURE, Trigger.CANCEL): Status.CANCELED,
    # v1.2: a customer action between the confirm and the gateway's answer.
    (Status.PROCESSING, Trigger.REQUIRE_ACTION): Status.REQUIRES_ACTION,
    (Status.REQUIRES_ACTION, Trigger.RESUME): Status.PROCESSING,
    (Status.REQUIRES_ACTION, Trigger.SUCCEED): Status.SUCCEEDED,
    (Status.REQUIRES_ACTION, Trigger.AUTHORIZE): Status.REQUIRES_CAPTURE,
    (Status.REQUIRES_ACTION, Trigger.FAIL): Status.FAILED,
    (Status.REQUIRES_ACTION, Trigger.CANCEL): Status.CANCELED,
}

# Where a connector's answer about an open attempt may still move the payment:
# the statuses :func:`settle` applies an outcome to (the guard of every settle).
AWAITING_ANSWER = (Status.PROCESSING, Status.REQUIRES_ACTION)

CAPTURE_METHODS = frozenset({"automatic", "manual"})
METHOD_TYPES = frozenset({"card", "upi", "netbanking", "wallet"})


MACHINE: StateMachine[Status, Trigger] = StateMachine("payment", Status, TRANSITIONS)
# The status after a trigger (raises IllegalTransition: ``payment_unexpected_state``),
# whether a trigger is legal, and the statuses it moves from (a conditional update's guard).
next_status = MACHINE.next_status
can = MACHINE.can
sources = MACHINE.sources


class OutcomeKind(str, enum.Enum):
    """What a connector said about an attempt."""

    SUCCEEDED = "succeeded"      # money moved (automatic capture)
    AUTHORIZED = "authorized"    # held, awaiting capture
    DECLINED = "declined"        # a definite no; never retried elsewhere
    PENDING = "pending"          # accepted, the answer comes by webhook
    REQUIRES_ACTION = "requires_action"  # the customer must act first; ``next_action`` says how
    CANCELED = "canceled"        # canceled at the gateway (e.g. an abandoned customer action)
    UNKNOWN = "unknown"          # timeout / 5xx: we do not know; reconcile later


@dataclass(frozen=True)
class Outcome:
    """What a connector said about an attempt.

    Attributes:
      kind: the answer.
      connector_txn_id: the gateway's id of the charge (Stripe: the PaymentIntent
        ``pi_…``; Razorpay: the order ``order_…``); capture, cancel, refunds and
        reconciliation address it.
      error_code: the gateway's decline or error code (``card_declined``).
      message: a human sentence for ``last_error``.
      next_action: with ``REQUIRES_ACTION``: the contract's ``next_action`` object
        (``{"type": "redirect_to_url", ...}`` or ``{"type": "connector_sdk", ...}``).
      method_details: what the gateway tells of the payment method, to store and
        show (``{"brand": "visa", "last4": "4242"}``), or None.
    """

    kind: OutcomeKind
    connector_txn_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    next_action: dict | None = None
    method_details: dict | None = None


@dataclass(frozen=True)
class Settlement:
    """The changes an outcome makes to a payment awaiting an answer and to its attempt.

    Attributes:
      status: the payment's status after it (may equal the current one).
      attempt_status: the attempt's status after it (``started`` while the
        attempt is still open: pending, waiting for the customer).
      amount_received, amount_capturable: the payment's amounts after it.
      last_error: the payment's ``last_error`` after it.
      next_action: the payment's ``next_action`` (set only in ``requires_action``).
      cancellation_reason: why a ``canceled`` payment was canceled, or None.
    """

    status: Status
    attempt_status: str
    amount_received: int
    amount_capturable: int
    last_error: dict | None
    next_action: dict | None = None
    cancellation_reason: str | None = None


# The trigger each conclusive outcome fires (PENDING from ``requires_action`` is RESUME).
_TRIGGER_OF = {
    OutcomeKind.SUCCEEDED: Trigger.SUCCEED,
    OutcomeKind.AUTHORIZED: Trigger.AUTHORIZE,
    OutcomeKind.DECLINED: Trigger.FAIL,
    OutcomeKind.REQUIRES_ACTION: Trigger.REQUIRE_ACTION,
    OutcomeKind.CANCELED: Trigger.CANCEL,
    OutcomeKind.PENDING: Trigger.RESUME,
}


def settle(amount: int, outcome: Outcome, current: Status | str = Status.PROCESSING,
           cancellation_reason: str | None = None) -> Settlement:
    """Apply a connector ``outcome`` to a payment of ``amount`` awaiting an answer.

    Args:
      current: ``processing`` or ``requires_action`` (:data:`AWAITING_ANSWER`).
      cancellation_reason: recorded when the outcome cancels the payment
        (``"abandoned"`` when Paycast canceled an abandoned customer action).

    Every status change is an edge of :data:`TRANSITIONS` (checked with
    :func:`next_status`). Outcomes without an edge from ``current`` leave the
    payment where it is: ``PENDING``/``UNKNOWN`` in ``processing``,
    ``UNKNOWN``/``REQUIRES_ACTION`` in ``requires_action`` (a new
    ``next_action`` replaces the old one). A ``CANCELED`` outcome while
    ``processing`` (the customer never saw a challenge, the gateway canceled
    on its own) is a failure: the contract has no processing → canceled.

    Returns:
      The new status and amounts, and the attempt's status.

    Raises:
      ValueError: ``current`` does not await an answer.
    """
    current = Status(current)
    if current not in AWAITING_ANSWER:
        raise ValueError(f"a {current.value} payment awaits no connector answer")
    kind = outcome.kind
    if kind is OutcomeKind.CANCELED and current is Status.PROCESSING:
        error = {"code": outcome.error_code or "payment_canceled",
                 "message": outcome.message or "The connector canceled the payment."}
        return Settlement(next_status(current, Trigger.FAIL), "failed", 0, 0, error)
    trigger = _TRIGGER_OF.get(kind)
    status = next_status(current, trigger) if trigger is not None and can(current, trigger) else current
    if status is Status.SUCCEEDED:
        return Settlement(status, "succeeded", amount, 0, None)
    if status is Status.REQUIRES_CAPTURE:
        return Settlement(status, "authorized", 0, amount, None)
    if status is Status.FAILED:
        error = {"code": outcome.error_code or "card_declined", "message": outcome.message or "The payment was declined."}
        return Settlement(status, "failed", 0, 0, error)
    if status is Status.CANCELED:
        return Settlement(status, "failed", 0, 0, None, cancellation_reason=cancellation_reason)
    if status is Status.REQUIRES_ACTION:
        return Settlement(status, "started", 0, 0, None, next_action=outcome.next_action)
    error = None
    if kind is OutcomeKind.UNKNOWN:
        error = {"code": outcome.error_code or "connector_unknown_outcome", "message": outcome.message or "The connector did not answer; the payment will be reconciled."}
    return Settlement(Status.PROCESSING, "unknown" if kind is OutcomeKind.UNKNOWN else "started", 0, 0, error)


def moves(current: Status | str, outcome: Outcome) -> bool:
    """Whether ``outcome`` changes anything of a payment in ``current`` (one of
    :data:`AWAITING_ANSWER`): an ``UNKNOWN`` answer while the customer acts
    (reconciliation could not reach the gateway) changes nothing."""
    return not (Status(current) is Status.REQUIRES_ACTION and outcome.kind is OutcomeKind.UNKNOWN)


def validate_capture(status: Status | str, amount_capturable: int, amount: int | None) -> int:
    """The amount to capture, checked against what is capturable.

    Raises:
      IllegalTransition: the payment is not ``requires_capture``.
      InvalidRequest: ``amount`` (param) is not in 1..amount_capturable.
    """
    next_status(status, Trigger.CAPTURE)
    if amount is None:
        return amount_capturable
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= amount_capturable:
        raise InvalidRequest(
            f"Capture amount must be between 1 and the capturable {amount_capturable}.", param="amount"
        )
    return amount
