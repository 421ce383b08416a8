"""Error rendering: every failure leaves as ``{"error": {...}}`` of the contract (docs/api.md),
never a traceback."""

from __future__ import annotations

import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from app.body import Reply, json_reply, response_of
from domain.errors import (AuthenticationFailed, BodyTooLarge, IdempotencyKeyInUse, IdempotencyKeyReused,
                           InternalError, InvalidRequest, NotFound, PaycastError, RateLimited, StateError,
                           Unavailable)

log = logging.getLogger("paycast.http")

# The HTTP status of each domain error (the most specific class wins); the
# one place where the core's errors meet HTTP.
STATUS: dict[type[PaycastError], int] = {
    PaycastError: 400,
    AuthenticationFailed: 401,
    NotFound: 404,
    StateError: 409,
    IdempotencyKeyInUse: 409,
    IdempotencyKeyReused: 422,
    BodyTooLarge: 413,
    RateLimited: 429,
    InternalError: 500,
    Unavailable: 503,
}


def status_of(exc: PaycastError) -> int:
    """The HTTP status for ``exc``: an explicit ``status`` set at the edge, else :data:`STATUS`."""
    explicit = getattr(exc, "status", None)
    if explicit is not None:
        return explicit
    return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)


def error_reply(exc: PaycastError) -> Reply:
    """``exc`` as the contract's error object, with its status and headers (``Retry-After``)."""
    headers = getattr(exc, "headers", None) or {}
    return json_reply(exc.to_dict(), status_of(exc), tuple(headers.items()))


def error_response(exc: PaycastError) -> Response:
    return response_of(error_reply(exc))


def register(app: Quart) -> None:
    @app.errorhandler(PaycastError)
    async def _paycast(exc: PaycastError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return error_response(body_too_large())
        if code == 408:
            return error_response(body_timeout())
        if code == 404:
            return error_response(NotFound("Unrecognized request URL. See /openapi.json for valid routes."))
        if code == 405:
            err = InvalidRequest("This method is not allowed on this URL.", code="method_not_allowed")
            err.status = 405
            return error_response(err)
        if code < 500:
            err = InvalidRequest(exc.description or "Bad request.")
            err.status = code
            return error_response(err)
        return _internal()

    @app.errorhandler(Exception)
    async def _any(exc: Exception) -> Response:
        log.exception("unhandled error")
        return _internal()


def body_too_large() -> BodyTooLarge:
    """The 413 of a body over ``PAYCAST_MAX_BODY_BYTES``, wherever it is found too large."""
    return BodyTooLarge("The request body is larger than 1 MiB.")


def body_timeout() -> InvalidRequest:
    """The 408 of a sender that stalled mid-body, on every edge."""
    err = InvalidRequest("The request body was not received in time.")
    err.status = 408
    return err


def internal_error() -> InternalError:
    """The 500 every edge answers for a bug (its traceback goes to the log, never to the client)."""
    return InternalError("Something went wrong on our side; it has been logged.")


def _internal() -> Response:
    return error_response(internal_error())
