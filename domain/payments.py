"""The payment state machine, as data.

``TRANSITIONS`` is the whole truth about which status may follow which; every
write in storage is a conditional update from the status this module says is
legal, so the table and the database agree even across processes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.errors import InvalidRequest, StateError


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
    CANCEL = "cancel"            # the merchant canceled


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (Status.REQUIRES_CONFIRMATION, Trigger.CONFIRM): Status.PROCESSING,
    (Status.REQUIRES_CONFIRMATION, Trigger.CANCEL): Status.CANCELED,
    (Status.PROCESSING, Trigger.SUCCEED): Status.SUCCEEDED,
    (Status.PROCESSING, Trigger.AUTHORIZE): Status.REQUIRES_CAPTURE,
    (Status.PROCESSING, Trigger.FAIL): Status.FAILED,
    (Status.REQUIRES_CAPTURE, Trigger.CAPTURE): Status.SUCCEEDED,
    (Status.REQUIRES_CAPTURE, Trigger.CANCEL): Status.CANCELED,
}

CAPTURE_METHODS = frozenset({"automatic", "manual"})
METHOD_TYPES = frozenset({"card", "upi", "netbanking", "wallet"})


def next_status(current: Status | str, trigger: Trigger) -> Status:
    """The status after ``trigger``.

    Raises:
      StateError: ``payment_unexpected_state`` when the table has no such edge
        (in particular, from any terminal status).
    """
    current = Status(current)
    try:
        return TRANSITIONS[(current, trigger)]
    except KeyError:
        raise StateError(
            f"You cannot {trigger.value} this payment because it has a status of {current.value}."
        ) from None


def sources(trigger: Trigger) -> list[str]:
    """The statuses ``trigger`` may move a payment from: the guard a conditional
    update checks (``WHERE status = ANY(...)``), so storage never restates the table."""
    return [current.value for current, t in TRANSITIONS if t is trigger]


def can(current: Status | str, trigger: Trigger) -> bool:
    """True if ``trigger`` is legal from ``current``."""
    return (Status(current), trigger) in TRANSITIONS


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
    """The changes an outcome makes to a ``processing`` payment and its attempt."""

    status: Status
    attempt_status: str
    amount_received: int
    amount_capturable: int
    last_error: dict | None


def settle(amount: int, outcome: Outcome) -> Settlement:
    """Apply a connector ``outcome`` to a payment of ``amount`` that is ``processing``.

    Returns:
      The new status and amounts, and the attempt's status.
    """
    kind = outcome.kind
    if kind is OutcomeKind.SUCCEEDED:
        return Settlement(Status.SUCCEEDED, "succeeded", amount, 0, None)
    if kind is OutcomeKind.AUTHORIZED:
        return Settlement(Status.REQUIRES_CAPTURE, "authorized", 0, amount, None)
    if kind is OutcomeKind.DECLINED:
        error = {"code": outcome.error_code or "card_declined", "message": outcome.message or "The payment was declined."}
        return Settlement(Status.FAILED, "failed", 0, 0, error)
    status = "unknown" if kind is OutcomeKind.UNKNOWN else "started"
    error = None
    if kind is OutcomeKind.UNKNOWN:
        error = {"code": outcome.error_code or "connector_unknown_outcome", "message": outcome.message or "The connector did not answer; the payment will be reconciled."}
    return Settlement(Status.PROCESSING, status, 0, 0, error)


def validate_capture(status: Status | str, amount_capturable: int, amount: int | None) -> int:
    """The amount to capture, checked against what is capturable.

    Raises:
      StateError: the payment is not ``requires_capture``.
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
