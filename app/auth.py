"""Authentication on Quart's routes: merchant API keys (Bearer, stored hashed) and the admin token."""

from __future__ import annotations

import functools
import hmac

from quart import current_app, g, request

from app.context import merchant_keys
from app.merchant_keys import bearer_token
from domain.errors import AuthenticationFailed


async def authenticate_merchant() -> str:
    """The merchant id for the request's API key (also stored in ``g.merchant_id``).

    Raises:
      AuthenticationFailed: missing or unknown key.
      RateLimited: the merchant's rate limit is reached.
    """
    g.merchant_id = merchant_id = await merchant_keys().authenticate(request.headers.get("Authorization"))
    return merchant_id


def merchant_required(handler):
    """Route decorator: authenticate before the handler runs."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        await authenticate_merchant()
        return await handler(*args, **kwargs)

    return wrapper


def admin_required(handler):
    """Route decorator: the ``PAYCAST_ADMIN_TOKEN`` bearer, compared in constant time."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        expected = current_app.config["ADMIN_TOKEN"]
        token = bearer_token(request.headers.get("Authorization"))
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise AuthenticationFailed("Invalid admin token.")
        return await handler(*args, **kwargs)

    return wrapper
