"""Domain errors: one class per failure a caller can act on.

Each carries its meaning: the error ``type`` and ``code`` of the contract
(docs/api.md) and the ``param`` at fault. Which HTTP status that is, is the
edge's business (:data:`app.errors.STATUS`): the core never mentions HTTP.
"""

from __future__ import annotations


class PaycastError(Exception):
    """Base class. ``type``, ``code`` and ``param`` are what the contract promises."""

    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        """The ``{"error": {...}}`` object of the contract."""
        return {"error": {"type": self.type, "code": self.code, "message": self.message, "param": self.param}}


class InternalError(PaycastError):
    """Something failed that the caller cannot act on (logged with its traceback)."""

    type = "api_error"
    code = "internal_error"


class InvalidRequest(PaycastError):
    """Bad JSON, a bad field (``param`` names it), an unknown parameter."""


class AuthenticationFailed(PaycastError):
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(PaycastError):
    """A missing object, or one of another merchant (indistinguishable on purpose)."""

    type = "not_found"
    code = "not_found"


class StateError(PaycastError):
    """A transition the object's current state does not allow."""

    type = "state_error"
    code = "payment_unexpected_state"


class IdempotencyKeyInUse(PaycastError):
    type = "idempotency_error"
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(PaycastError):
    type = "idempotency_error"
    code = "idempotency_key_reused"


class BodyTooLarge(PaycastError):
    type = "invalid_request_error"
    code = "body_too_large"


class RateLimited(PaycastError):
    type = "rate_limit_error"
    code = "rate_limited"


class Unavailable(PaycastError):
    """The database (or an actor behind it) cannot answer now; retry later."""

    type = "api_error"
    code = "unavailable"


class RefundExceedsPayment(StateError):
    """The refund would take the non-failed refunds of a payment past what it received."""

    code = "refund_exceeds_payment"


class ChargeDisputed(StateError):
    """The payment has an open or lost dispute: refunding it would pay twice."""

    code = "charge_disputed"


class InsufficientFunds(StateError):
    """A withdrawal larger than the wallet's available balance."""

    code = "insufficient_funds"


class DisputeStateError(StateError):
    """An action the dispute's current status does not allow (evidence on a closed dispute)."""

    code = "dispute_unexpected_state"


class EndpointDisabled(StateError):
    """A manual retry to a webhook endpoint that is disabled."""

    code = "endpoint_disabled"


class NotYetApplicable(Exception):
    """A gateway webhook that cannot be applied yet (its payment has not
    succeeded, or a verdict came before its dispute): not an API error; the
    inbox releases the row and applies it on a later try."""


class InvalidToken(AuthenticationFailed):
    """A realtime token that is malformed or not signed by this deployment."""

    code = "invalid_token"


class TokenExpired(AuthenticationFailed):
    """A realtime token past its ``expires_at``."""

    code = "token_expired"


class FrameRejected(PaycastError):
    """A WebSocket frame from a client that cannot be acted on.

    Never an HTTP answer: the connection sends it back as an ``error`` frame
    (``code`` and ``message``) and keeps serving.
    """

    code = "invalid_frame"
