"""The merchant's hot POSTs — create, confirm, capture and cancel a payment, refund one —
as one pipeline for both edges that can serve them.

A hot POST is a handler of explicit arguments, ``handler(components,
merchant_id, raw_body, *path_args) -> Reply``; :func:`serve_post` runs it
behind the API key, the rate limit and ``Idempotency-Key``, exactly as the
decorators of Quart's other routes do. It is called by the ASGI endpoint that
serves these routes in production (:class:`app.merchant_endpoint.MerchantEndpoint`)
and by their Quart routes (:func:`quart_post`), which stay for route listings,
the OpenAPI check and processes built without that endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from quart import Response, request

from app.body import Headers, Reply, read_raw, response_of
from app.context import components, merchant_keys
from app.errors import error_reply
from app.idempotency import once
from app.merchant_keys import MerchantKeys
from components import Components
from domain.errors import PaycastError

HotPost = Callable[..., Awaitable[Reply]]


async def serve_post(components_: Components, keys: MerchantKeys, headers: Headers, method: str, path: str,
                     read: Callable[[], Awaitable[bytes]], handler: HotPost, *path_args: str) -> Reply:
    """``handler``'s reply for an authenticated merchant, once per ``Idempotency-Key``.

    Args:
      headers: the request's headers (``Authorization``, ``Idempotency-Key``).
      read: the raw body; called more than once, so it must keep what it read.

    Returns:
      The reply, the contract's error object for any :class:`PaycastError`.
    """
    try:
        merchant_id = await keys.authenticate(headers.get("Authorization"))

        async def run() -> Reply:
            return await handler(components_, merchant_id, await read(), *path_args)

        key = headers.get("Idempotency-Key")
        if key is None:
            return await run()
        return await once(components_.idempotency_keys, merchant_id, key, method, path, read, run)
    except PaycastError as exc:
        return error_reply(exc)


async def quart_post(handler: HotPost, *path_args: str) -> Response:
    """A hot POST served by Quart (the route function's whole body)."""
    req = request._get_current_object()
    return response_of(await serve_post(components(), merchant_keys(), req.headers, req.method, req.path, read_raw,
                                        handler, *path_args))
