"""The payment actor: every command for one payment goes through its inbox.

Commands for one payment are therefore handled one at a time in this process;
across processes the conditional updates in :mod:`storage.payments` keep the
transitions correct (DESIGN.md decision 2). The actor holds no state between
messages beyond what is in the database, so passivating it loses nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import trio

from actors import disputing, refunding
from domain.errors import InvalidRequest, StateError
from domain.ids import new_id
from domain.payments import Outcome, OutcomeKind, validate_capture

# Outcomes that settle a payment for good when reconciliation hears them.
_CONCLUSIVE = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.AUTHORIZED, OutcomeKind.DECLINED})
from actors.connector_call import CallResult
from gateways.base import AuthorizeRequest
from storage import inbox, reconcile
from storage import payments as store
from telemetry import tracing

log = logging.getLogger("paycast.payment")


@dataclass(frozen=True)
class Confirm:
    merchant_id: str
    begun: store.Begun | None = None  # set when create already started the attempt


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


@dataclass(frozen=True)
class Reconcile:
    """The payment is past its processing deadline: ask the connector."""

    merchant_id: str


def falls_back(result: CallResult, remaining) -> bool:
    """Whether a failed attempt may be retried on the next connector.

    Only when the connector guarantees nothing was charged (an open circuit,
    or an error it declares "not processed"): anything else (a timeout, an
    undeclared 5xx) may hide a charge, so the attempt stays ``unknown`` and
    the payment ``processing`` for reconciliation. A decline is an answer,
    never an error.
    """
    return not result.ok and result.nothing_charged and bool(remaining)


def _request(payment: dict, attempt_id: str) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=payment["id"], attempt_id=attempt_id, merchant_id=payment["merchant_id"],
        amount=payment["amount"], currency=payment["currency"], capture_method=payment["capture_method"],
        payment_method=payment["payment_method"],
    )


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


class PaymentActor:
    """Handles one message for one payment (the registry serialises per payment).

    Args:
      system: the running :class:`actors.system.System` (database, connectors, routing).
    """

    def __init__(self, system) -> None:
        self.system = system

    async def handle(self, payment_id: str, message: object) -> dict:
        if isinstance(message, Confirm):
            return await self._confirm(payment_id, message)
        if isinstance(message, Capture):
            return await self._capture(payment_id, message)
        if isinstance(message, Cancel):
            return await self._cancel(payment_id, message)
        if isinstance(message, ApplyWebhook):
            return await self.system.db.transaction(inbox.apply, message.inbox_id,
                                                    self.system.settings.webhook_unmatched_grace_s)
        if isinstance(message, Reconcile):
            return await self._reconcile(payment_id, message)
        if isinstance(message, Refund):
            return await refunding.refund(self.system, payment_id, message)
        if isinstance(message, SubmitDisputeEvidence):
            return await disputing.submit_evidence(self.system, message)
        if isinstance(message, AcceptDispute):
            return await disputing.accept(self.system, message)
        raise TypeError(f"unknown payment message {message!r}")

    async def _confirm(self, payment_id: str, msg: Confirm) -> dict:
        db, settings = self.system.db, self.system.settings
        begun = msg.begun or await db.transaction(
            store.begin_attempt, msg.merchant_id, payment_id, settings.processing_deadline_s,
            route=self.system.router(),
        )
        remaining = list(begun.candidates[1:])
        while True:
            started = trio.current_time()
            outcome, result = await self._authorize(begun.connector, _request(begun.payment, begun.attempt_id))
            latency_ms = (trio.current_time() - started) * 1000
            if falls_back(result, remaining):
                await db.transaction(store.settle, msg.merchant_id, payment_id, begun.attempt_id, outcome,
                                     final=False, latency_ms=latency_ms)
                begun = await db.transaction(
                    store.begin_attempt, msg.merchant_id, payment_id, settings.processing_deadline_s,
                    connector=remaining.pop(0), first=False,
                )
                continue
            return await db.transaction(store.settle, msg.merchant_id, payment_id, begun.attempt_id, outcome,
                                        latency_ms=latency_ms)

    async def _authorize(self, name: str, request: AuthorizeRequest) -> tuple[Outcome, CallResult]:
        """Call one connector through :mod:`actors.connector_call` (timeout, breaker).

        Returns:
          The outcome, and the call's result. A failed call's outcome is
          ``unknown`` with the error's code: the confirm falls back when the
          error is declared safe, otherwise reconciliation learns the truth.
        """
        result = await self.system.connector_call.call(name, lambda c: c.authorize(request),
                                                       what=f"authorize {request.payment_id}", gate=True)
        if result.ok:
            return result.value, result
        return Outcome(OutcomeKind.UNKNOWN, None, result.error.code, str(result.error)), result

    async def create_and_confirm(self, merchant_id: str, spec: dict) -> dict:
        """``POST /v1/payments`` with ``confirm: true``.

        With in-process connectors the attempts run first and the payment is
        written once, with its attempts and events, in one crossing
        (:func:`storage.payments.insert_confirmed`); nobody else can address a
        payment before its id is returned, so no actor is needed. Otherwise the
        intent is written first and the payment actor confirms.
        """
        system = self.system
        routing = await system.routing_config(merchant_id)
        candidates = system.candidates(routing, spec["payment_method"]["type"], spec.get("connector"))
        if not all(getattr(system.connectors[c], "in_process", False) for c in candidates):
            begun = await system.db.transaction(
                store.create_and_begin, merchant_id, spec, system.settings.processing_deadline_s,
                system.router(),
            )
            return await system.ask_payment(begun.payment["id"], Confirm(merchant_id, begun))
        now = dt.datetime.now(dt.timezone.utc)
        payment = {"id": new_id("pay"), "merchant_id": merchant_id, **spec}
        attempts: list[store.AttemptRecord] = []
        for i, name in enumerate(candidates):
            attempt_id = new_id("att")
            started, clock = dt.datetime.now(dt.timezone.utc), trio.current_time()
            outcome, result = await self._authorize(name, _request(payment, attempt_id))
            attempts.append(store.AttemptRecord(attempt_id, name, "failed", outcome.connector_txn_id,
                                                outcome.error_code, started, (trio.current_time() - clock) * 1000))
            if not falls_back(result, candidates[i + 1:]):
                break
        item = store.Confirmed(merchant_id, spec, payment["id"], attempts, outcome,
                               system.settings.processing_deadline_s, now,
                               traceparent=tracing.current_traceparent())
        return await system.payment_writer.write(item, system.settings.ask_timeout_s)

    async def _capture(self, payment_id: str, msg: Capture) -> dict:
        db = self.system.db
        row = await db.transaction(store.fetch_row, msg.merchant_id, payment_id)
        amount = validate_capture(row["status"], row["amount_capturable"], msg.amount)
        txn = await self._authorized_txn(payment_id)
        (await self.system.connector_call.call(row["connector"], lambda c: c.capture(txn, amount),
                                               what=f"capture {payment_id}")).unwrap()
        return await db.transaction(store.capture, msg.merchant_id, payment_id, amount)

    async def _cancel(self, payment_id: str, msg: Cancel) -> dict:
        db = self.system.db
        row = await db.transaction(store.fetch_row, msg.merchant_id, payment_id)
        if row["status"] == "requires_capture":
            txn = await self._authorized_txn(payment_id)
            (await self.system.connector_call.call(row["connector"], lambda c: c.void(txn),
                                                   what=f"void {payment_id}")).unwrap()
        elif row["status"] != "requires_confirmation":
            raise StateError(f"You cannot cancel this payment because it has a status of {row['status']}.")
        return await db.transaction(store.cancel, msg.merchant_id, payment_id)

    async def _authorized_txn(self, payment_id: str) -> str:
        txn = await self.system.db.transaction(store.authorized_txn, payment_id)
        if txn is None:
            raise InvalidRequest("The payment has no authorised attempt.")
        return txn

    async def _reconcile(self, payment_id: str, msg: Reconcile) -> dict:
        """Ask the connector what became of a payment stuck in ``processing``."""
        db, settings = self.system.db, self.system.settings
        attempt = await db.transaction(reconcile.open_attempt, payment_id)
        outcome = None
        if attempt is None:
            log.warning("reconcile %s: no open attempt", payment_id)
        else:
            result = await self.system.connector_call.call(
                attempt["connector"], lambda c: c.retrieve(attempt["connector_txn_id"], payment_id),
                what=f"retrieve {payment_id}")
            outcome = result.value
        if outcome is not None and outcome.kind in _CONCLUSIVE:
            self.system.reconciled += 1
            return await db.transaction(store.settle, msg.merchant_id, payment_id, attempt["id"], outcome)
        return await db.transaction(reconcile.record_check, payment_id, settings.reconcile_max_checks,
                                    settings.processing_deadline_s)
