"""Wallet transactions (deposits and withdrawals), sans-IO: their state machine
as a table, with the ledger movement and the event each transition writes.

A deposit is ``pending`` while its payment is; it is ``completed`` (credited)
when the payment succeeds and ``failed`` when it fails. A withdrawal reserves
its amount when it is created (still ``pending``), then the payout's outcome
either pays the reservation out (``completed``) or releases it (``failed``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.ledger import Movement


class Type(str, enum.Enum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


class Status(str, enum.Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class Trigger(str, enum.Enum):
    SUCCEED = "succeed"  # the deposit's payment succeeded / the payout was paid
    FAIL = "fail"        # the deposit's payment failed / the payout failed


@dataclass(frozen=True)
class Step:
    """What a transition does: the new status, the ledger movement it writes
    (if any) and the event type it emits."""

    status: Status
    movement: Movement | None
    event: str


TRANSITIONS: dict[tuple[Type, Status, Trigger], Step] = {
    (Type.DEPOSIT, Status.PENDING, Trigger.SUCCEED):
        Step(Status.COMPLETED, Movement.DEPOSIT, "account.deposit.completed"),
    (Type.DEPOSIT, Status.PENDING, Trigger.FAIL):
        Step(Status.FAILED, None, "account.deposit.failed"),
    (Type.WITHDRAWAL, Status.PENDING, Trigger.SUCCEED):
        Step(Status.COMPLETED, Movement.PAYOUT, "account.withdrawal.completed"),
    (Type.WITHDRAWAL, Status.PENDING, Trigger.FAIL):
        Step(Status.FAILED, Movement.RELEASE, "account.withdrawal.failed"),
}
# The movement a withdrawal writes when it is created.
ON_CREATE: dict[Type, Movement | None] = {Type.DEPOSIT: None, Type.WITHDRAWAL: Movement.RESERVE}
# The movements a transaction has written once it reached a status (for the invariants).
MOVEMENTS_BY_STATE: dict[tuple[Type, Status], frozenset[Movement]] = {
    (Type.DEPOSIT, Status.PENDING): frozenset(),
    (Type.DEPOSIT, Status.COMPLETED): frozenset({Movement.DEPOSIT}),
    (Type.DEPOSIT, Status.FAILED): frozenset(),
    (Type.WITHDRAWAL, Status.PENDING): frozenset({Movement.RESERVE}),
    (Type.WITHDRAWAL, Status.COMPLETED): frozenset({Movement.RESERVE, Movement.PAYOUT}),
    (Type.WITHDRAWAL, Status.FAILED): frozenset({Movement.RESERVE, Movement.RELEASE}),
}
# A deposit follows its payment's terminal status.
PAYMENT_TRIGGERS = {"succeeded": Trigger.SUCCEED, "failed": Trigger.FAIL, "canceled": Trigger.FAIL}
# A withdrawal follows its payout's webhook.
PAYOUT_TRIGGERS = {"payout.paid": Trigger.SUCCEED, "payout.failed": Trigger.FAIL}


def step(type_: Type | str, status: Status | str, trigger: Trigger) -> Step | None:
    """The transition for ``trigger``, or ``None`` when it does not apply (the
    transaction already ended: a late or repeated outcome changes nothing)."""
    return TRANSITIONS.get((Type(type_), Status(status), trigger))
