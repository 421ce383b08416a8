"""The connector interface every gateway implements, and its errors.

Connectors speak in :class:`domain.payments.Outcome`; a connector *error* is
something else: the call itself failed, and whether money moved is unknown
(timeout) or known not to have moved (5xx before processing, open circuit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.submission import Submission  # noqa: F401 - part of the connector protocol
from domain.payments import Outcome


class ConnectorError(Exception):
    """The connector call failed.

    Whether money may have moved is the connector's to say: only the errors a
    connector lists in its ``not_processed_errors`` (and an open circuit, when
    nothing was sent) are known to have charged nothing; see :func:`nothing_charged`.
    """

    code = "connector_error"


class ConnectorTimeout(ConnectorError):
    """No answer in time: the charge may or may not have happened."""

    code = "connector_timeout"


class ConnectorServerError(ConnectorError):
    """The connector answered 5xx: it did not process the request."""

    code = "connector_server_error"


class ConnectorUnavailable(ConnectorError):
    """Refused locally (open circuit breaker) or unreachable."""

    code = "connector_unavailable"


class CircuitOpen(ConnectorUnavailable):
    """Refused locally by the circuit breaker: the request was never sent."""

    code = "connector_unavailable"


def nothing_charged(connector: object, error: BaseException | None) -> bool:
    """Whether ``error`` guarantees the connector processed nothing.

    True for a request never sent (:class:`CircuitOpen`) and for the errors
    the connector itself declares in ``not_processed_errors``; a timeout or
    any undeclared error may hide a charge, so it is False for them.
    """
    if error is None:
        return False
    if isinstance(error, CircuitOpen):
        return True
    return isinstance(error, tuple(getattr(connector, "not_processed_errors", ())))


@dataclass(frozen=True)
class AuthorizeRequest:
    payment_id: str
    attempt_id: str
    merchant_id: str
    amount: int
    currency: str
    capture_method: str
    payment_method: dict  # stored form: card {brand, first6, last4} or upi {vpa}


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str
    payment_id: str
    merchant_id: str
    connector_txn_id: str  # the charge being refunded
    amount: int
    currency: str


@dataclass(frozen=True)
class PayoutRequest:
    transaction_id: str
    account_id: str
    merchant_id: str
    amount: int
    currency: str


class Connector(Protocol):
    """What a gateway must do. All methods may raise :class:`ConnectorError`."""

    name: str
    methods: frozenset[str]
    #: Errors this gateway guarantees it raises before processing anything
    #: (so a payment may fall back to another connector as a new attempt).
    not_processed_errors: tuple[type[ConnectorError], ...]

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        """Charge (automatic capture) or authorise (manual) a payment."""

    async def capture(self, connector_txn_id: str, amount: int) -> None:
        """Capture ``amount`` of an authorisation."""

    async def void(self, connector_txn_id: str) -> None:
        """Release an authorisation."""

    async def retrieve(self, connector_txn_id: str | None, payment_id: str) -> Outcome:
        """Ask what became of a payment (reconciliation)."""

    async def refund(self, request: RefundRequest) -> Submission:
        """Return ``amount`` of a charge to the payer."""

    async def payout(self, request: PayoutRequest) -> Submission:
        """Send ``amount`` out of the platform to a wallet holder."""

    async def retrieve_refund(self, request: RefundRequest, reference: str | None) -> Submission:
        """Ask what became of a refund (reconciliation); ``pending`` if not decided yet."""

    async def retrieve_payout(self, request: PayoutRequest, reference: str | None) -> Submission:
        """Ask what became of a payout (reconciliation); ``pending`` if not decided yet."""

    async def submit_dispute_evidence(self, connector_dispute_id: str, text: str, *, payment_id: str,
                                      dispute_id: str, amount: int, currency: str) -> None:
        """Send the merchant's evidence; the verdict comes later by webhook."""

    async def accept_dispute(self, connector_dispute_id: str) -> None:
        """Concede a dispute (the payer keeps the money)."""
