"""The errors of Paycast, one hierarchy: one class per failure a caller can act on.

:class:`CodedError` is the root: a message and a ``code``. Under it,
:class:`PaycastError` is an answer to a caller: the error ``type`` and ``code``
of the contract (docs/api.md) and the ``param`` at fault. Which HTTP status
that is, is the edge's business (:data:`app.errors.STATUS`): the core never
mentions HTTP. A connector's failed call (``gateways.base.ConnectorError``) is
the other branch: never an answer by itself, the payment path decides what it
means (fall back, reconcile).
"""

from __future__ import annotations


class CodedError(Exception):
    """The root of Paycast's errors: a ``message`` and a machine-readable ``code``
    (the class's, unless the raiser gives one)."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class PaycastError(CodedError):
    """An error the caller is answered with. ``type``, ``code`` and ``param`` are what the contract promises."""

    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.param = param

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


class IllegalTransition(StateError):
    """A trigger a state machine's table has no edge for from the current status
    (raised by :meth:`domain.state_machine.StateMachine.next_status`).

    Attributes:
      machine: what it would have moved (``payment``, ``refund``, ``dispute``).
      current: its current status (not ``status``: that is the edge's HTTP status override).
      trigger: the trigger refused.
    """

    def __init__(self, machine: str, current: str, trigger: str, *, verb: str | None = None):
        super().__init__(f"You cannot {verb or trigger} this {machine} because it has a status of {current}.")
        self.machine = machine
        self.current = current
        self.trigger = trigger


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


class IllegalDisputeTransition(IllegalTransition, DisputeStateError):
    """A merchant action the dispute's table refuses (``dispute_unexpected_state``)."""


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


class TokenRevoked(AuthenticationFailed):
    """A realtime token issued for a device before that device was deleted."""

    code = "token_revoked"


class FrameRejected(PaycastError):
    """A WebSocket frame from a client that cannot be acted on.

    Never an HTTP answer: the connection sends it back as an ``error`` frame
    (``code`` and ``message``) and keeps serving.
    """

    code = "invalid_frame"
