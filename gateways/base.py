"""The connector interface every gateway implements, and its errors.

Connectors speak in :class:`domain.payments.Outcome`; a connector *error* is
something else: the call itself failed, and whether money moved is unknown
(timeout) or known not to have moved (5xx before processing, open circuit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.errors import CodedError
from domain.submission import Submission  # noqa: F401 - part of the connector protocol
from domain.payments import Outcome


class ConnectorError(CodedError):
    """The connector call failed (a branch of the one hierarchy, domain/errors.py).

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


class CredentialsInvalid(ConnectorError):
    """The gateway refused the account's credentials (HTTP 401/403): nothing was processed."""

    code = "connector_credentials_invalid"


class ConnectorRefused(ConnectorError):
    """The gateway answered a definite 4xx "no" to a request (not a decline of a
    charge, which is an :class:`Outcome`): e.g. a capture of more than was
    authorised, a refund of a charge already refunded. Nothing was processed.

    Attributes:
      code: the gateway's error code when it gave one (``charge_already_refunded``).
    """

    code = "connector_refused"


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
    # Stored form: simulators: card {brand, first6, last4} or upi {vpa};
    # real connectors: {"type": "card", "token": "pm_…"} or {"type": "upi"|…} (no details).
    payment_method: dict
    return_url: str | None = None  # where a 3-D Secure redirect comes back to (v1.2)
    customer_id: str | None = None
    order_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The key every gateway call that creates this attempt carries: our attempt id,
        so a replay (a retry, a reconciliation) never charges twice."""
        return self.attempt_id


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str
    payment_id: str
    merchant_id: str
    connector_txn_id: str  # the charge being refunded
    amount: int
    currency: str
    reason: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Our refund id: a replayed refund call never refunds twice."""
        return self.refund_id


@dataclass(frozen=True)
class PayoutRequest:
    transaction_id: str
    account_id: str
    merchant_id: str
    amount: int
    currency: str


def operation_key(attempt_id: str, operation: str) -> str:
    """The idempotency key of a follow-up call on an attempt (``capture``, ``cancel``)."""
    return f"{attempt_id}:{operation}"


class Connector(Protocol):
    """What a gateway must do. All methods may raise :class:`ConnectorError`.

    The simulators are process-wide, one object per name. A real connector
    (``stripe``, ``razorpay``) is one object per merchant's connector account,
    built from its decrypted credentials (:class:`RealConnector`); it is called
    through the same protocol.

    Keyword ``idempotency_key`` on capture and void is :func:`operation_key`
    of the attempt; a gateway without idempotency keys ignores it (and must
    then never blindly repeat a call that ended without an answer).
    ``void`` also cancels an authorisation that still waits for a customer
    action (``requires_action``).
    ``retrieve`` gets the attempt's :class:`AuthorizeRequest` as ``request``
    when known, so a connector can replay the create with the same idempotency
    key when ``connector_txn_id`` is None (the create ended without an answer).
    """

    name: str
    methods: frozenset[str]
    #: Errors this gateway guarantees it raises before processing anything
    #: (so a payment may fall back to another connector as a new attempt).
    not_processed_errors: tuple[type[ConnectorError], ...]

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        """Charge (automatic capture) or authorise (manual) a payment."""

    async def capture(self, connector_txn_id: str, amount: int, *, idempotency_key: str | None = None) -> None:
        """Capture ``amount`` of an authorisation."""

    async def void(self, connector_txn_id: str, *, idempotency_key: str | None = None) -> None:
        """Release an authorisation, or cancel a payment waiting for a customer action."""

    async def retrieve(self, connector_txn_id: str | None, payment_id: str, *,
                       request: AuthorizeRequest | None = None) -> Outcome:
        """Ask what became of a payment (reconciliation). ``REQUIRES_ACTION`` while the
        customer has still to act; ``CANCELED`` once canceled at the gateway."""

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


class RealConnector(Connector, Protocol):
    """A connector bound to one merchant's connector account (``mca_…``).

    Built by the connector-account component as
    ``cls(credentials, api_base=..., account_id=..., timeout_s=...)`` from the
    decrypted credentials (never logged, never put in an error message).
    """

    #: Keys its credentials object must have (e.g. ``("secret_key",)``).
    credential_fields: tuple[str, ...]

    async def verify_credentials(self) -> bool:
        """Try the credentials with a cheap authenticated read.

        Returns:
          ``livemode``: whether they are live (not test-mode) credentials.

        Raises:
          CredentialsInvalid: the gateway refused them.
          ConnectorUnavailable: the gateway could not be reached or answered 5xx.
        """

    async def aclose(self) -> None:
        """Close its HTTP client."""
