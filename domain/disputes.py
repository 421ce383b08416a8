"""Disputes, sans-IO: the state machine as a table (domain/state_machine.py), and the merchant's balance view.

A connector opens a dispute (``needs_response``). The merchant either submits
evidence (``under_review``) or accepts it (``accepted``: lost by choice). The
connector decides ``won`` or ``lost`` by webhook, from ``needs_response`` too
(no answer in time loses). ``won``, ``lost`` and ``accepted`` are terminal.
"""

from __future__ import annotations

import enum

from domain.errors import IllegalDisputeTransition
from domain.state_machine import StateMachine


class Status(str, enum.Enum):
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"
    ACCEPTED = "accepted"


class Trigger(str, enum.Enum):
    SUBMIT_EVIDENCE = "submit_evidence"
    ACCEPT = "accept"
    WIN = "win"
    LOSE = "lose"


TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (Status.NEEDS_RESPONSE, Trigger.SUBMIT_EVIDENCE): Status.UNDER_REVIEW,
    (Status.NEEDS_RESPONSE, Trigger.ACCEPT): Status.ACCEPTED,
    (Status.NEEDS_RESPONSE, Trigger.WIN): Status.WON,
    (Status.NEEDS_RESPONSE, Trigger.LOSE): Status.LOST,
    (Status.UNDER_REVIEW, Trigger.WIN): Status.WON,
    (Status.UNDER_REVIEW, Trigger.LOSE): Status.LOST,
}
TERMINAL = frozenset({Status.WON, Status.LOST, Status.ACCEPTED})
# Funds are held from the merchant while the dispute is open, gone once it is lost.
OPEN = frozenset({Status.NEEDS_RESPONSE, Status.UNDER_REVIEW})
LOST_FUNDS = frozenset({Status.LOST, Status.ACCEPTED})
# The event written when a dispute reaches a status.
EVENT_FOR = {Status.NEEDS_RESPONSE: "dispute.opened", Status.WON: "dispute.won", Status.LOST: "dispute.lost",
             Status.ACCEPTED: "dispute.accepted"}
WEBHOOK_TRIGGERS = {"dispute.won": Trigger.WIN, "dispute.lost": Trigger.LOSE}
MAX_EVIDENCE_CHARS = 50_000


MACHINE: StateMachine[Status, Trigger] = StateMachine(
    "dispute", Status, TRANSITIONS, error=IllegalDisputeTransition,
    verbs={Trigger.SUBMIT_EVIDENCE: "submit evidence for", Trigger.ACCEPT: "accept"})
# A merchant action without an edge is refused (``dispute_unexpected_state``);
# a connector's late or duplicate verdict has none either: callers ask
# :func:`can` first and change nothing.
next_status = MACHINE.next_status
can = MACHINE.can


def balance(received: int, refunded: int, disputes: list[tuple[str, int]]) -> dict[str, int]:
    """The merchant's balance view for one currency.

    Args:
      received: what the merchant's payments received.
      refunded: their non-failed refunds.
      disputes: ``(status, amount)`` of every dispute.

    Returns:
      ``received``, ``refunded``, ``disputed_held`` (open disputes: held, given
      back on a win), ``disputed_lost`` and ``available``.
    """
    held = sum(a for s, a in disputes if Status(s) in OPEN)
    lost = sum(a for s, a in disputes if Status(s) in LOST_FUNDS)
    return {"received": received, "refunded": refunded, "disputed_held": held, "disputed_lost": lost,
            "available": received - refunded - held - lost}
