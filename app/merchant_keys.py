"""Merchant API keys: the bearer token to a merchant id, and each merchant's rate limit.

Plain objects (no Quart), so both edges that serve merchants use one
implementation: Quart's routes through :func:`app.auth.authenticate_merchant`,
the hot POSTs served at the ASGI level through :mod:`app.merchant_endpoint`.
"""

from __future__ import annotations

import trio

from domain.errors import AuthenticationFailed, RateLimited
from domain.ratelimit import TokenBucket, retry_after_header
from storage import merchants
from telemetry import logs

# Merchants found by key hash. Keys never change once issued, so a positive
# answer can be cached for the process lifetime; misses are not cached (a new
# merchant created by another process must work at once). The bound keeps a
# flood of distinct valid keys from growing the cache without end.
_CACHE_LIMIT = 10_000


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value.

    Raises:
      AuthenticationFailed: no header, another scheme, or an empty token.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("No valid API key provided. Use 'Authorization: Bearer <api_key>'.")
    return token.strip()


class MerchantKeys:
    """API key → merchant id (cached), then the merchant's token bucket.

    Args:
      components: the process's :class:`components.Components`; ``merchants``
        is read at the first lookup (route listings build an app without it).
    """

    def __init__(self, components) -> None:
        self._components = components
        self._merchants_by_hash: dict[str, str] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def authenticate(self, authorization: str | None) -> str:
        """The merchant of the request's API key, within its rate limit; also set as the log context.

        Args:
          authorization: the ``Authorization`` header's value, if any.

        Raises:
          AuthenticationFailed: missing or unknown key.
          RateLimited: the merchant's bucket is empty (``headers`` carries ``Retry-After``).
        """
        key_hash = merchants.hash_key(bearer_token(authorization))
        merchant_id = self._merchants_by_hash.get(key_hash)
        if merchant_id is None:
            row = await self._components.merchants.by_key_hash(key_hash)
            if row is None:
                raise AuthenticationFailed("Invalid API key provided.")
            merchant_id = row["id"]
            if len(self._merchants_by_hash) < _CACHE_LIMIT:
                self._merchants_by_hash[key_hash] = merchant_id
        logs.merchant_id.set(merchant_id)
        self._rate_limit(merchant_id)
        return merchant_id

    def _rate_limit(self, merchant_id: str) -> None:
        settings = self._components.settings
        if settings.rate_limit_rps <= 0:
            return
        bucket = self._buckets.get(merchant_id)
        if bucket is None:
            bucket = self._buckets[merchant_id] = TokenBucket(settings.rate_limit_rps, settings.rate_limit_burst)
        wait = bucket.take(trio.current_time())
        if wait:
            err = RateLimited("Too many requests for this API key; slow down.")
            err.headers = {"Retry-After": retry_after_header(wait)}
            raise err
