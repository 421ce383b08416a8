"""The payment actor: every command for one payment goes through its inbox.

Commands for one payment are therefore handled one at a time in this process;
across processes the conditional updates in :mod:`storage.payments` keep the
transitions correct (docs/architecture.md decision 2). The actor holds no state between
messages beyond what is in the database, so passivating it loses nothing.
"""

from __future__ import annotations

import functools
import logging

import trio

from actors import disputing, refunding
from actors.connector_call import CallResult
from actors.ports import PaymentSide
from actors.payment_messages import (Abandon, AcceptDispute, ApplyWebhook, Cancel, Capture, Confirm, Reconcile,
                                     Refund, SubmitDisputeEvidence)
from actors.runtime import Handlers
from domain.errors import InvalidRequest
from domain.payments import Outcome, OutcomeKind, Status, Trigger, next_status, validate_capture
from gateways.base import AuthorizeRequest, operation_key
from storage import reconcile
from storage import payments as store

log = logging.getLogger("paycast.payment")
# Outcomes that move a ``processing`` payment when reconciliation hears them.
_CONCLUSIVE = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.AUTHORIZED, OutcomeKind.DECLINED,
                         OutcomeKind.REQUIRES_ACTION, OutcomeKind.CANCELED})
# The cancellation_reason of a payment whose customer never finished the action in time.
ABANDONED = "abandoned"
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


def _charged_attempt(loaded: store.Loaded) -> dict:
    """The attempt a capture or cancel goes to: the authorised one, or the one waiting for its customer."""
    attempt = loaded.charged_attempt()
    if attempt is None or attempt["connector_txn_id"] is None:
        raise InvalidRequest("The payment has no authorised attempt.")
    return attempt


def _request(payment, attempt_id: str) -> AuthorizeRequest:
    """The attempt's request, from the payment's row (or its JSON form)."""
    return AuthorizeRequest(
        payment_id=payment["id"], attempt_id=attempt_id, merchant_id=payment["merchant_id"],
        amount=payment["amount"], currency=payment["currency"], capture_method=payment["capture_method"],
        payment_method=payment["payment_method"], return_url=payment.get("return_url"),
        customer_id=payment["customer_id"], order_id=payment["order_id"],
    )


class PaymentActor:
    """Handles one message for one payment (the registry serialises per payment).

    Args:
      payments: the payment side (:class:`actors.ports.PaymentSide`: database, connectors, routing,
        group commit, the other payment actors; the running :class:`components.payments.Payments`).
    """

    def __init__(self, payments: PaymentSide) -> None:
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
            msg.merchant_id, functools.partial(store.begin_attempt, route=self.payments.router(),
                                               return_url=msg.return_url,
                                               action_deadline_s=settings.action_deadline_s),
            msg.merchant_id, payment_id, settings.processing_deadline_s,
        )
        remaining = list(begun.candidates[1:])
        while True:
            started = trio.current_time()
            outcome, result = await self._authorize(begun, _request(begun.payment, begun.attempt_id))
            latency_ms = (trio.current_time() - started) * 1000
            if falls_back(result, remaining):
                await db.transaction(store.settle, msg.merchant_id, payment_id, begun.attempt_id, outcome,
                                     final=False, latency_ms=latency_ms)
                begun = await db.transaction(
                    store.begin_attempt, msg.merchant_id, payment_id, settings.processing_deadline_s,
                    connector=remaining.pop(0), first=False,
                )
                continue
            if store.may_be_followed(db.commits.followers, begun.payment):
                return await db.transaction(store.settle_begun, begun, outcome, latency_ms)
            return await self.payments.write(msg.merchant_id, store.settle_begun, begun, outcome, latency_ms)

    async def _authorize(self, begun: store.Begun, request: AuthorizeRequest) -> tuple[Outcome, CallResult]:
        """Call the attempt's connector (its account's, for a real one) through
        :mod:`actors.connector_call` (timeout, breaker).

        Returns:
          The outcome, and the call's result. A failed call's outcome is
          ``unknown`` with the error's code: the confirm falls back when the
          error is declared safe, otherwise reconciliation learns the truth.
        """
        result = await self.payments.connector_call.call(begun.connector, lambda c: c.authorize(request),
                                                       what=f"authorize {request.payment_id}", gate=True,
                                                       account_id=begun.account_id)
        if result.ok:
            return result.value, result
        return Outcome(OutcomeKind.UNKNOWN, None, result.error.code, str(result.error)), result

    async def create_and_confirm(self, merchant_id: str, spec: dict) -> dict:
        """``POST /v1/payments`` with ``confirm: true``.

        The same path for every connector, simulated or across the network
        (docs/architecture.md decision 8): the payment and its ``started`` attempt are
        committed (one statement) before the connector is called, then the
        payment's actor confirms as for ``/confirm``.
        """
        payments = self.payments
        routing = await payments.routing_config(merchant_id)
        candidates = payments.candidates(routing, spec["payment_method"], spec.get("connector"))
        begun = await payments.write(merchant_id, store.create_and_begin, merchant_id, spec,
                                   payments.settings.processing_deadline_s, candidates,
                                   payments.settings.action_deadline_s)
        return await payments.ask_payment(begun.payment["id"], Confirm(merchant_id, begun))

    @handles(Capture)
    async def _capture(self, payment_id: str, msg: Capture) -> dict:
        db = self.payments.db
        loaded = await db.transaction(store.load, msg.merchant_id, payment_id)
        row = loaded.row
        amount = validate_capture(row["status"], row["amount_capturable"], msg.amount)
        attempt = _charged_attempt(loaded)
        if amount < row["amount_capturable"]:
            connector = await self.payments.connector_call.connector_for(row["connector"],
                                                                        attempt.get("connector_account_id"))
            if not getattr(connector, "partial_capture", True):
                raise InvalidRequest(f"{row['connector']} cannot capture part of an authorisation; capture "
                                     "all of it and refund the rest.", param="amount",
                                     code="partial_capture_unsupported")
        txn, key = attempt["connector_txn_id"], operation_key(attempt["id"], "capture")
        loaded = await self._claimed_call(loaded, attempt, Trigger.CAPTURE,
                                          lambda c: c.capture(txn, amount, idempotency_key=key))
        return await db.transaction(store.capture, loaded, amount)

    @handles(Cancel)
    async def _cancel(self, payment_id: str, msg: Cancel) -> dict:
        db = self.payments.db
        loaded = await db.transaction(store.load, msg.merchant_id, payment_id)
        status = loaded.row["status"]
        next_status(status, Trigger.CANCEL)  # raises IllegalTransition when the table has no cancel
        if status in (Status.REQUIRES_CAPTURE.value, Status.REQUIRES_ACTION.value):
            loaded = await self._void(loaded)
        return await db.transaction(store.cancel, loaded)

    async def _void(self, loaded: store.Loaded) -> store.Loaded:
        """Cancel at the gateway first (an authorisation, or a payment waiting for its customer)."""
        attempt = _charged_attempt(loaded)
        txn, key = attempt["connector_txn_id"], operation_key(attempt["id"], "cancel")
        return await self._claimed_call(loaded, attempt, Trigger.CANCEL,
                                        lambda c: c.void(txn, idempotency_key=key))

    async def _claimed_call(self, loaded: store.Loaded, attempt: dict, trigger: Trigger, call) -> store.Loaded:
        """Call the attempt's connector for ``trigger``, holding the payment's claim
        in the database for the call (several processes may race on one
        payment; only the claimant reaches the gateway).

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
        # The payment's connector (its last attempt's), at the account that attempt went to.
        result = await self.payments.connector_call.call(loaded.row["connector"], call,
                                                       what=f"{trigger.value} {loaded.row['id']}",
                                                       account_id=attempt.get("connector_account_id"))
        if not result.ok:
            await db.transaction(store.release_operation, loaded, trigger)
        result.unwrap()
        return loaded

    async def _retrieve(self, attempt, payment_id: str) -> Outcome | None:
        """Ask the attempt's connector what became of the payment (None: no answer)."""
        request = _request(attempt["payment"], attempt["id"])
        result = await self.payments.connector_call.call(
            attempt["connector"],
            lambda c: c.retrieve(attempt["connector_txn_id"], payment_id, request=request),
            what=f"retrieve {payment_id}", account_id=attempt["connector_account_id"])
        return result.value

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
            outcome = await self._retrieve(attempt, payment_id)
        if outcome is not None and outcome.kind in _CONCLUSIVE:
            self.payments.reconciled += 1
            return await db.transaction(store.settle, msg.merchant_id, payment_id, attempt["id"], outcome)
        return await db.transaction(reconcile.record_check, payment_id, settings.reconcile_max_checks,
                                    settings.processing_deadline_s)

    @handles(Abandon)
    async def _abandon(self, payment_id: str, msg: Abandon) -> dict:
        """End a payment left in ``requires_action`` past its action deadline.

        The gateway is asked first: what happened meanwhile (paid, failed,
        canceled, now processing) settles it. If the customer still has not
        acted, the payment is canceled at the gateway (through the claimed
        call, as a merchant's cancel) and then here, ``cancellation_reason:
        "abandoned"``. No answer: nothing changes; the reconciler's lease
        lapses and it is asked again.
        """
        db = self.payments.db
        loaded = await db.transaction(store.load, msg.merchant_id, payment_id)
        attempt = await db.transaction(reconcile.open_attempt, payment_id, 0.0)
        if loaded.row["status"] != Status.REQUIRES_ACTION.value or attempt is None:
            return loaded.snapshot
        outcome = await self._retrieve(attempt, payment_id)
        if outcome is None or outcome.kind is OutcomeKind.UNKNOWN:
            return loaded.snapshot
        if outcome.kind is not OutcomeKind.REQUIRES_ACTION:
            return await db.transaction(store.settle, msg.merchant_id, payment_id, attempt["id"], outcome,
                                        cancellation_reason=ABANDONED)
        loaded = await self._void(loaded)
        log.info("payment %s abandoned in requires_action: canceled at %s", payment_id, attempt["connector"])
        return await db.transaction(store.cancel, loaded, ABANDONED)
