"""In-process simulated gateways: ``mockstripe``, ``mockrazorpay`` and ``flaky``.

Outcomes follow API.md "Built-in gateway simulators". The simulators keep what
they charged in memory, as a real gateway keeps it in its own database, so
``retrieve`` answers reconciliation truthfully within one process lifetime.
"""

from __future__ import annotations

import random
import secrets

import trio

from domain.payments import Outcome, OutcomeKind
from gateways.base import AuthorizeRequest, ConnectorServerError, ConnectorTimeout

# (first6, last4) of the documented test cards → (outcome, error code).
TEST_CARDS: dict[tuple[str, str], tuple[OutcomeKind, str | None]] = {
    ("424242", "4242"): (OutcomeKind.SUCCEEDED, None),
    ("400000", "0002"): (OutcomeKind.DECLINED, "card_declined"),
    ("400000", "9995"): (OutcomeKind.DECLINED, "insufficient_funds"),
    ("400000", "0259"): (OutcomeKind.SUCCEEDED, None),  # a dispute follows (see disputes)
}
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "upi_failed": "The UPI payment was declined by the payer's bank.",
}
# UPI VPAs: all answer "processing" now; the webhook (or its absence) decides.
UPI_OUTCOMES = {"success@upi": "succeeded", "failure@upi": "failed", "pending@upi": None}


class SimulatedConnector:
    """A gateway whose answers depend only on the payment method.

    Args:
      name: connector name (also the webhook path segment).
      txn_prefix: how this gateway's transaction ids look.
    """

    methods = frozenset({"card", "upi", "netbanking", "wallet"})

    def __init__(self, name: str, txn_prefix: str) -> None:
        self.name = name
        self._txn_prefix = txn_prefix
        # txn id → final outcome kind as the gateway knows it.
        self.ledger: dict[str, Outcome] = {}
        # payment id → txn id, so retrieve works without a txn id too.
        self._by_payment: dict[str, str] = {}

    def _new_txn(self, payment_id: str) -> str:
        txn = f"{self._txn_prefix}{secrets.token_hex(8)}"
        self._by_payment[payment_id] = txn
        return txn

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        txn = self._new_txn(request.payment_id)
        method = request.payment_method
        if method.get("type") == "upi":
            vpa = method.get("upi", {}).get("vpa", "")
            final = UPI_OUTCOMES.get(vpa, "succeeded")
            self.ledger[txn] = (
                Outcome(OutcomeKind.DECLINED, txn, "upi_failed", DECLINE_MESSAGES["upi_failed"])
                if final == "failed" else Outcome(OutcomeKind.SUCCEEDED, txn)
            )
            return Outcome(OutcomeKind.PENDING, txn)
        kind, code = OutcomeKind.SUCCEEDED, None
        if method.get("type") == "card":
            card = method.get("card", {})
            kind, code = TEST_CARDS.get((card.get("first6"), card.get("last4")), (OutcomeKind.SUCCEEDED, None))
        if kind is OutcomeKind.SUCCEEDED and request.capture_method == "manual":
            kind = OutcomeKind.AUTHORIZED
        outcome = Outcome(kind, txn, code, DECLINE_MESSAGES.get(code or ""))
        self.ledger[txn] = outcome
        return outcome

    async def capture(self, connector_txn_id: str, amount: int) -> None:
        self.ledger[connector_txn_id] = Outcome(OutcomeKind.SUCCEEDED, connector_txn_id)

    async def void(self, connector_txn_id: str) -> None:
        self.ledger.pop(connector_txn_id, None)

    async def retrieve(self, connector_txn_id: str | None, payment_id: str) -> Outcome:
        txn = connector_txn_id or self._by_payment.get(payment_id)
        known = self.ledger.get(txn) if txn else None
        if known is None:
            # Never reached us (or we lost it): from the gateway's side, nothing was charged.
            return Outcome(OutcomeKind.DECLINED, txn, "payment_not_found", "The connector has no such payment.")
        return known


class FlakyConnector(SimulatedConnector):
    """Succeeds like ``mockstripe`` except at ``error_rate``, where it times out or answers 500.

    Args:
      error_rate: probability in [0, 1] of an error per call.
      timeout_s: how long a "timeout" takes before the caller gives up.
      rng: injectable for deterministic tests.
    """

    def __init__(self, error_rate: float, timeout_s: float = 0.05, rng: random.Random | None = None) -> None:
        super().__init__("flaky", "flk_")
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


def build_connectors(flaky_error_rate: float) -> dict[str, SimulatedConnector]:
    """The built-in connectors by name."""
    return {
        "mockstripe": SimulatedConnector("mockstripe", "pi_"),
        "mockrazorpay": SimulatedConnector("mockrazorpay", "pay_"),
        "flaky": FlakyConnector(flaky_error_rate),
    }
