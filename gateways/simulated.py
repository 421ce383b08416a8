"""In-process simulated gateways: ``mockstripe``, ``mockrazorpay`` and ``flaky``.

Outcomes follow docs/api.md "Built-in gateway simulators". Asynchronous outcomes
(UPI) are answered ``pending`` now and delivered later as signed webhooks over
real HTTP by :class:`gateways.simulator.WebhookSimulator`.

A simulated gateway must answer ``retrieve`` truthfully from any process and
after restarts, as a real gateway would from its own database. So the final
outcome is encoded in the last character of the transaction id it hands out
(``pi_<16 hex><code>``); the in-memory ledger only adds later changes
(captures, voids).

Refunds, payouts and dispute verdicts are asynchronous, as at real gateways:
the call answers ``pending`` and the outcome follows as a webhook. Test
inputs that choose an outcome (documented in README "Test inputs"):

- card ``4000000000000259`` succeeds, then a dispute opens (automatic capture);
- card ``4000000000005126`` succeeds, but its refunds fail (Stripe's test card);
- dispute evidence containing ``winning_evidence`` wins, ``losing_evidence``
  loses (Stripe's test strings); other evidence waits for a verdict;
- a payout whose amount ends in ``99`` minor units fails;
- a refund or payout whose amount ends in ``77`` is never answered by webhook;
  asked by reconciliation, the gateway says it succeeded (refund) / was paid.
"""

from __future__ import annotations

import random
import secrets

import trio

from domain.payments import Outcome, OutcomeKind
from gateways import call_journal
from gateways.base import (AuthorizeRequest, ConnectorError, ConnectorServerError, ConnectorTimeout, PayoutRequest,
                           RefundRequest, Submission)

# (first6, last4) of the documented test cards → (outcome, error code).
TEST_CARDS: dict[tuple[str, str], tuple[OutcomeKind, str | None]] = {
    ("424242", "4242"): (OutcomeKind.SUCCEEDED, None),
    ("400000", "0002"): (OutcomeKind.DECLINED, "card_declined"),
    ("400000", "9995"): (OutcomeKind.DECLINED, "insufficient_funds"),
    ("400000", "0259"): (OutcomeKind.SUCCEEDED, None),  # a dispute follows (see disputes)
    ("400000", "5126"): (OutcomeKind.SUCCEEDED, None),  # its refunds fail
}
DISPUTE_CARD = ("400000", "0259")
REFUND_FAILS_CARD = ("400000", "5126")
# Special successes: the charge succeeded, and something follows. They end in
# their own code character so a later call (refund) or any process knows.
_FLAGS = {DISPUTE_CARD: "x", REFUND_FAILS_CARD: "r"}
FAILING_PAYOUT_SUFFIX = 99  # amount % 100
SILENT_SUFFIX = 77  # amount % 100: no webhook ever (refunds, payouts)
WINNING_EVIDENCE = "winning_evidence"
LOSING_EVIDENCE = "losing_evidence"
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "upi_failed": "The UPI payment was declined by the payer's bank.",
    "payment_not_found": "The connector has no such payment.",
}
# Final outcome ↔ the code character that ends a simulated transaction id.
_CODES = {
    "s": (OutcomeKind.SUCCEEDED, None),
    "a": (OutcomeKind.AUTHORIZED, None),
    "d": (OutcomeKind.DECLINED, "card_declined"),
    "i": (OutcomeKind.DECLINED, "insufficient_funds"),
    "u": (OutcomeKind.DECLINED, "upi_failed"),
}
_CODE_OF = {v: k for k, v in _CODES.items()}


def decode(txn_id: str) -> Outcome | None:
    """The outcome a simulated transaction id carries, or None if it is not one of ours."""
    last = txn_id[-1:] if txn_id else ""
    found = _CODES["s"] if last in _FLAGS.values() else _CODES.get(last)
    if found is None:
        return None
    kind, code = found
    return Outcome(kind, txn_id, code, DECLINE_MESSAGES.get(code or ""))


class SimulatedConnector:
    """A gateway whose answers depend only on the payment method.

    Args:
      name: connector name (also the webhook path segment).
      txn_prefix: how this gateway's transaction ids look.
      webhooks: where asynchronous outcomes are scheduled (None: never sent).
    """

    methods = frozenset({"card", "upi", "netbanking", "wallet"})
    # The simulators answer 500 before doing anything (docs/api.md), so their 500s
    # are declared safe and the fallback stays demonstrable; their timeouts are not.
    not_processed_errors: tuple[type[ConnectorError], ...] = (ConnectorServerError,)

    def __init__(self, name: str, txn_prefix: str, webhooks=None, *, refund_prefix: str = "re_sim_",
                 dispute_prefix: str = "du_sim_", payout_prefix: str = "po_sim_") -> None:
        self.name = name
        self._txn_prefix = txn_prefix
        self._refund_prefix = refund_prefix
        self._dispute_prefix = dispute_prefix
        self._payout_prefix = payout_prefix
        self.webhooks = webhooks
        self._ledger: dict[str, Outcome] = {}  # later changes: captures, voids

    def _txn(self, kind: OutcomeKind, code: str | None, flag: str | None = None) -> str:
        return f"{self._txn_prefix}{secrets.token_hex(8)}{flag or _CODE_OF[(kind, code)]}"

    def _send(self, kind: str, ref: str, amount: int, currency: str, metadata: dict[str, str],
              status: str | None = None) -> None:
        if self.webhooks is not None:
            self.webhooks.schedule(self.name, kind, ref, amount, currency, metadata, status)

    def _final(self, request: AuthorizeRequest) -> tuple[OutcomeKind, str | None, bool]:
        """(final kind, error code, asynchronous?) for a request."""
        method = request.payment_method
        if method.get("type") == "upi":
            vpa = method.get("upi", {}).get("vpa", "")
            if vpa == "failure@upi":
                return OutcomeKind.DECLINED, "upi_failed", True
            return OutcomeKind.SUCCEEDED, None, True
        kind, code = OutcomeKind.SUCCEEDED, None
        if method.get("type") == "card":
            card = method.get("card", {})
            kind, code = TEST_CARDS.get((card.get("first6"), card.get("last4")), (OutcomeKind.SUCCEEDED, None))
        return kind, code, False

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        call_journal.record(self.name, "authorize", payment_id=request.payment_id)
        kind, code, asynchronous = self._final(request)
        if kind is OutcomeKind.SUCCEEDED and request.capture_method == "manual":
            kind = OutcomeKind.AUTHORIZED
        card = request.payment_method.get("card") or {}
        flag = _FLAGS.get((card.get("first6"), card.get("last4"))) if kind is OutcomeKind.SUCCEEDED else None
        txn = self._txn(kind, code, flag)
        if not asynchronous:
            if flag == _FLAGS[DISPUTE_CARD]:
                self._send("dispute.opened", f"{self._dispute_prefix}{secrets.token_hex(8)}", request.amount,
                           request.currency, {"payment_id": request.payment_id}, "needs_response")
            return Outcome(kind, txn, code, DECLINE_MESSAGES.get(code or ""))
        vpa = request.payment_method.get("upi", {}).get("vpa")
        if self.webhooks is not None and vpa != "pending@upi":
            self.webhooks.schedule(self.name, "payment.succeeded" if kind is not OutcomeKind.DECLINED
                                   else "payment.failed", txn, request.amount, request.currency,
                                   {"payment_id": request.payment_id})
        return Outcome(OutcomeKind.PENDING, txn)

    async def capture(self, connector_txn_id: str, amount: int, *, idempotency_key: str | None = None) -> None:
        call_journal.record(self.name, "capture", ref=connector_txn_id)
        self._ledger[connector_txn_id] = Outcome(OutcomeKind.SUCCEEDED, connector_txn_id)

    async def void(self, connector_txn_id: str, *, idempotency_key: str | None = None) -> None:
        call_journal.record(self.name, "void", ref=connector_txn_id)
        self._ledger[connector_txn_id] = Outcome(OutcomeKind.DECLINED, connector_txn_id, "voided")

    async def retrieve(self, connector_txn_id: str | None, payment_id: str, *,
                       request: AuthorizeRequest | None = None) -> Outcome:
        call_journal.record(self.name, "retrieve", ref=connector_txn_id, payment_id=payment_id)
        if connector_txn_id:
            known = self._ledger.get(connector_txn_id) or decode(connector_txn_id)
            if known is not None:
                return known
        # Never reached us (e.g. a timeout before processing): nothing was charged.
        return Outcome(OutcomeKind.DECLINED, connector_txn_id, "payment_not_found",
                       DECLINE_MESSAGES["payment_not_found"])

    async def refund(self, request: RefundRequest) -> Submission:
        call_journal.record(self.name, "refund", ref=request.refund_id, payment_id=request.payment_id)
        ref = f"{self._refund_prefix}{secrets.token_hex(8)}"
        if request.amount % 100 != SILENT_SUFFIX:
            self._send("refund.failed" if self._refund_fails(request) else "refund.succeeded", ref, request.amount,
                       request.currency, {"payment_id": request.payment_id, "refund_id": request.refund_id})
        return Submission("pending", ref)

    @staticmethod
    def _refund_fails(request: RefundRequest) -> bool:
        return request.connector_txn_id.endswith(_FLAGS[REFUND_FAILS_CARD])

    async def retrieve_refund(self, request: RefundRequest, reference: str | None) -> Submission:
        # Decided by the request alone, so any process (or a restarted one) answers alike.
        if reference is None:
            # It never reached us (we answer every request we take with a reference).
            return Submission("failed", None, "refund_not_found")
        if self._refund_fails(request):
            return Submission("failed", reference, "refund_failed")
        return Submission("succeeded", reference)

    async def payout(self, request: PayoutRequest) -> Submission:
        call_journal.record(self.name, "payout", ref=request.transaction_id)
        ref = f"{self._payout_prefix}{secrets.token_hex(8)}"
        if request.amount % 100 != SILENT_SUFFIX:
            fails = request.amount % 100 == FAILING_PAYOUT_SUFFIX
            self._send("payout.failed" if fails else "payout.paid", ref, request.amount, request.currency,
                       {"transaction_id": request.transaction_id})
        return Submission("pending", ref)

    async def retrieve_payout(self, request: PayoutRequest, reference: str | None) -> Submission:
        if reference is None:
            return Submission("failed", None, "payout_not_found")
        if request.amount % 100 == FAILING_PAYOUT_SUFFIX:
            return Submission("failed", reference, "payout_failed")
        return Submission("succeeded", reference)

    async def submit_dispute_evidence(self, connector_dispute_id: str, text: str, *, payment_id: str,
                                      dispute_id: str, amount: int, currency: str) -> None:
        verdict = ("dispute.won" if WINNING_EVIDENCE in text else "dispute.lost" if LOSING_EVIDENCE in text
                   else None)
        if verdict:
            self._send(verdict, connector_dispute_id, amount, currency,
                       {"payment_id": payment_id, "dispute_id": dispute_id})

    async def accept_dispute(self, connector_dispute_id: str) -> None:
        return None  # the gateway closes it as lost; nothing more is sent


class FlakyConnector(SimulatedConnector):
    """Succeeds like ``mockstripe`` except at ``error_rate``, where it times out or answers 500.

    Args:
      error_rate: probability in [0, 1] of an error per authorisation.
      timeout_s: how long a "timeout" takes before the caller gives up.
      rng: injectable for deterministic tests.
    """

    def __init__(self, error_rate: float, webhooks=None, timeout_s: float = 0.05,
                 rng: random.Random | None = None) -> None:
        super().__init__("flaky", "flk_", webhooks)
        self.error_rate = error_rate
        self._timeout_s = timeout_s
        self._rng = rng or random.Random()

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        roll = self._rng.random()
        if roll < self.error_rate / 2:
            await trio.sleep(self._timeout_s)
            raise ConnectorTimeout("flaky timed out")
        if roll < self.error_rate:
            raise ConnectorServerError("flaky answered 500")
        return await super().authorize(request)


def build_connectors(flaky_error_rate: float, webhooks=None) -> dict[str, SimulatedConnector]:
    """The built-in connectors by name."""
    return {
        "mockstripe": SimulatedConnector("mockstripe", "pi_", webhooks),
        "mockrazorpay": SimulatedConnector("mockrazorpay", "pay_", webhooks, refund_prefix="rfnd_",
                                           dispute_prefix="disp_", payout_prefix="pout_"),
        "flaky": FlakyConnector(flaky_error_rate, webhooks),
    }
