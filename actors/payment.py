"""The payment actor: every command for one payment goes through its inbox.

Commands for one payment are therefore handled one at a time in this process;
across processes the conditional updates in :mod:`storage.payments` keep the
transitions correct (DESIGN.md decision 2). The actor holds no state between
messages beyond what is in the database, so passivating it loses nothing.
"""

from __future__ import annotations

import functools
import logging

import trio

from actors import disputing, refunding
from actors.connector_call import CallResult
from actors.payment_messages import (AcceptDispute, ApplyWebhook, Cancel, Capture, Confirm, Reconcile, Refund,
                                     SubmitDisputeEvidence)
from actors.runtime import Handlers
from domain.errors import InvalidRequest, StateError
from domain.payments import Outcome, OutcomeKind, Trigger, validate_capture
from gateways.base import AuthorizeRequest
from storage import reconcile
from storage import payments as store

log = logging.getLogger("paycast.payment")
# Outcomes that settle a payment for good when reconciliation hears them.
_CONCLUSIVE = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.AUTHORIZED, OutcomeKind.DECLINED})
# Which method handles which message (filled by @handles below).
handles = Handlers("payment")


def falls_back(result: CallResult, remaining) -> bool:
    """Whether a failed attempt may be retried on the next connector.

    Only when the connector guarantees nothing was charged (an open circuit,
    or an error it declares "not processed"): anything else (a timeout, an
    undeclared 5xx) may hide a charge, so the attempt stays ``unknown`` and
    the payment ``processing`` for reconciliation. A decline is an answer,
    never an error.
    """
    return not result.ok and result.nothing_charged and bool(remaining)


def _authorized_txn(loaded: store.Loaded) -> str:
    txn = loaded.authorized_txn()
    if txn is None:
        raise InvalidRequest("The payment has no authorised attempt.")
    return txn


def _request(payment: dict, attempt_id: str) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=payment["id"], attempt_id=attempt_id, merchant_id=payment["merchant_id"],
        amount=payment["amount"], currency=payment["currency"], capture_method=payment["capture_method"],
        payment_method=payment["payment_method"],
    )


class PaymentActor:
    """Handles one message for one payment (the registry serialises per payment).

    Args:
      payments: the running :class:`components.payments.Payments` (database, connectors, routing).
    """

    def __init__(self, payments) -> None:
        self.payments = payments

    async def handle(self, payment_id: str, message: object) -> dict:
        return await handles.dispatch(self, payment_id, message)

    @handles(ApplyWebhook)
    async def _apply_webhook(self, payment_id: str, msg: ApplyWebhook) -> dict:
        return await self.payments.apply_stored_webhook(msg.inbox_id, msg.seen, msg.claim)

    @handles(Refund)
    async def _refund(self, payment_id: str, msg: Refund) -> dict:
        return await refunding.refund(self.payments, payment_id, msg)

    @handles(SubmitDisputeEvidence)
    async def _submit_evidence(self, payment_id: str, msg: SubmitDisputeEvidence) -> dict:
        return await disputing.submit_evidence(self.payments, msg)

    @handles(AcceptDispute)
    async def _accept_dispute(self, payment_id: str, msg: AcceptDispute) -> dict:
        return await disputing.accept(self.payments, msg)

    @handles(Confirm)
    async def _confirm(self, payment_id: str, msg: Confirm) -> dict:
        db, settings = self.payments.db, self.payments.settings
        begun = msg.begun or await self.payments.write(
            msg.merchant_id, functools.partial(store.begin_attempt, route=self.payments.router()),
            msg.merchant_id, payment_id, settings.processing_deadline_s,
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
            if store.may_be_followed(begun.payment):
                return await db.transaction(store.settle_begun, begun, outcome, latency_ms)
            return await self.payments.write(msg.merchant_id, store.settle_begun, begun, outcome, latency_ms)

    async def _authorize(self, name: str, request: AuthorizeRequest) -> tuple[Outcome, CallResult]:
        """Call one connector through :mod:`actors.connector_call` (timeout, breaker).

        Returns:
          The outcome, and the call's result. A failed call's outcome is
          ``unknown`` with the error's code: the confirm falls back when the
          error is declared safe, otherwise reconciliation learns the truth.
        """
        result = await self.payments.connector_call.call(name, lambda c: c.authorize(request),
                                                       what=f"authorize {request.payment_id}", gate=True)
        if result.ok:
            return result.value, result
        return Outcome(OutcomeKind.UNKNOWN, None, result.error.code, str(result.error)), result

    async def create_and_confirm(self, merchant_id: str, spec: dict) -> dict:
        """``POST /v1/payments`` with ``confirm: true``.

        The same path for every connector, simulated or across the network
        (DESIGN.md decision 8): the payment and its ``started`` attempt are
        committed (one statement) before the connector is called, then the
        payment's actor confirms as for ``/confirm``.
        """
        payments = self.payments
        routing = await payments.routing_config(merchant_id)
        candidates = payments.candidates(routing, spec["payment_method"]["type"], spec.get("connector"))
        begun = await payments.write(merchant_id, store.create_and_begin, merchant_id, spec,
                                   payments.settings.processing_deadline_s, candidates)
        return await payments.ask_payment(begun.payment["id"], Confirm(merchant_id, begun))

    @handles(Capture)
    async def _capture(self, payment_id: str, msg: Capture) -> dict:
        db = self.payments.db
        loaded = await db.transaction(store.load, msg.merchant_id, payment_id)
        row = loaded.row
        amount = validate_capture(row["status"], row["amount_capturable"], msg.amount)
        txn = _authorized_txn(loaded)
        loaded = await self._claimed_call(loaded, Trigger.CAPTURE, lambda c: c.capture(txn, amount))
        return await db.transaction(store.capture, loaded, amount)

    @handles(Cancel)
    async def _cancel(self, payment_id: str, msg: Cancel) -> dict:
        db = self.payments.db
        loaded = await db.transaction(store.load, msg.merchant_id, payment_id)
        row = loaded.row
        if row["status"] == "requires_capture":
            txn = _authorized_txn(loaded)
            loaded = await self._claimed_call(loaded, Trigger.CANCEL, lambda c: c.void(txn))
        elif row["status"] != "requires_confirmation":
            raise StateError(f"You cannot cancel this payment because it has a status of {row['status']}.")
        return await db.transaction(store.cancel, loaded)

    async def _claimed_call(self, loaded: store.Loaded, trigger: Trigger, call) -> store.Loaded:
        """Call the connector for ``trigger`` on an authorised payment, holding
        the payment's claim in the database for the call (several processes
        may race on one payment; only the claimant reaches the gateway).

        Returns:
          ``loaded`` holding the claim: the write after the call must use it
          (it is refused if the claim lapsed and another request took it).

        Raises:
          StateError: another request holds the payment, or it moved on.
          Unavailable: the connector failed; the claim is given back and the
            payment is unchanged.
        """
        db = self.payments.db
        # Longer than any connector call may take (the call is bounded by the
        # connector timeout), so a live claimant never loses its claim mid-call.
        hold_s = 2 * self.payments.settings.connector_timeout_s + 5
        loaded = await db.transaction(store.claim_operation, loaded, trigger, hold_s)
        row = loaded.row
        result = await self.payments.connector_call.call(row["connector"], call,
                                                       what=f"{trigger.value} {row['id']}")
        if not result.ok:
            await db.transaction(store.release_operation, loaded, trigger)
        result.unwrap()
        return loaded

    @handles(Reconcile)
    async def _reconcile(self, payment_id: str, msg: Reconcile) -> dict:
        """Ask the connector what became of a payment stuck in ``processing``."""
        db, settings = self.payments.db, self.payments.settings
        attempt = await db.transaction(reconcile.open_attempt, payment_id, settings.connector_timeout_s + 5)
        outcome = None
        if attempt is None:
            log.warning("reconcile %s: no open attempt", payment_id)
        elif attempt["in_flight"]:
            # Its confirm is still calling the connector (here or in another
            # process): ask again when the reconciler's lease lapses.
            return {"in_flight": True}
        else:
            result = await self.payments.connector_call.call(
                attempt["connector"], lambda c: c.retrieve(attempt["connector_txn_id"], payment_id),
                what=f"retrieve {payment_id}")
            outcome = result.value
        if outcome is not None and outcome.kind in _CONCLUSIVE:
            self.payments.reconciled += 1
            return await db.transaction(store.settle, msg.merchant_id, payment_id, attempt["id"], outcome)
        return await db.transaction(reconcile.record_check, payment_id, settings.reconcile_max_checks,
                                    settings.processing_deadline_s)
