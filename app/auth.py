"""Authentication: merchant API keys (Bearer, stored hashed) and the admin token."""

from __future__ import annotations

import functools
import hmac

import trio
from quart import current_app, g, request

from app.context import components
from domain.errors import AuthenticationFailed, RateLimited
from domain.ratelimit import TokenBucket, retry_after_header
from storage import merchants
from telemetry import logs

# Merchants found by key hash. Keys never change once issued, so a positive
# answer can be cached for the process lifetime; misses are not cached (a new
# merchant created by another process must work at once).
_CACHE_LIMIT = 10_000


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("No valid API key provided. Use 'Authorization: Bearer <api_key>'.")
    return token.strip()


async def authenticate_merchant() -> str:
    """The merchant id for the request's API key (also stored in ``g.merchant_id``).

    Raises:
      AuthenticationFailed: missing or unknown key.
    """
    key_hash = merchants.hash_key(_bearer())
    cache: dict = current_app.config.setdefault("KEY_CACHE", {})
    merchant_id = cache.get(key_hash)
    if merchant_id is None:
        row = await components().merchants.by_key_hash(key_hash)
        if row is None:
            raise AuthenticationFailed("Invalid API key provided.")
        merchant_id = row["id"]
        if len(cache) < _CACHE_LIMIT:
            cache[key_hash] = merchant_id
    g.merchant_id = merchant_id
    logs.merchant_id.set(merchant_id)
    _rate_limit(merchant_id)
    return merchant_id


def _rate_limit(merchant_id: str) -> None:
    settings = components().settings
    if settings.rate_limit_rps <= 0:
        return
    buckets: dict = current_app.config.setdefault("RATE_BUCKETS", {})
    bucket = buckets.get(merchant_id)
    if bucket is None:
        bucket = buckets[merchant_id] = TokenBucket(settings.rate_limit_rps, settings.rate_limit_burst)
    wait = bucket.take(trio.current_time())
    if wait:
        err = RateLimited("Too many requests for this API key; slow down.")
        err.headers = {"Retry-After": retry_after_header(wait)}
        raise err


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
        if not hmac.compare_digest(_bearer().encode(), expected.encode()):
            raise AuthenticationFailed("Invalid admin token.")
        return await handler(*args, **kwargs)

    return wrapper
