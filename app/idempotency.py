"""``Idempotency-Key`` on POST: execute once, replay the stored response after.

The first completed response (status + body) is stored per merchant and
replayed byte for byte with ``Idempotent-Replayed: true``; 400 validation
failures (and 5xx) are not stored, so the client can fix and retry.
:func:`once` is the rule, for both edges; :func:`idempotent` applies it to a
Quart route.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable

import orjson
import trio
from quart import g, request

from app.body import Reply, read_raw, reply_of_response, response_of
from app.context import components
from app.errors import error_reply
from components.operations import IdempotencyKeys
from domain.errors import InvalidRequest, PaycastError

MAX_KEY_LENGTH = 255
REPLAYED = (("Idempotent-Replayed", "true"),)


def _request_hash(method: str, path: str, raw: bytes) -> str:
    try:  # canonical JSON, so re-serialising the same parameters is "the same request"
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):
        canonical = raw
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def once(keys: IdempotencyKeys, merchant_id: str, key: str, method: str, path: str,
               read: Callable[[], Awaitable[bytes]], run: Callable[[], Awaitable[Reply]]) -> Reply:
    """``run``'s reply, executed at most once per (merchant, ``key``); later the stored one.

    Args:
      key: the ``Idempotency-Key`` header's value.
      read: the request's raw body (hashed, so a key reused with other parameters is refused).
      run: the request's work; a :class:`PaycastError` it raises is its reply (and stored).

    Raises:
      InvalidRequest: the key is blank or longer than 255 characters.
      IdempotencyKeyInUse: a request with this key is still running.
      IdempotencyKeyReused: the key was used with another request.
    """
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.", param="Idempotency-Key")
    stored = await keys.claim(merchant_id, key, _request_hash(method, path, await read()))
    if stored is not None:
        return Reply(stored.status, stored.body.encode(), REPLAYED)
    # Once claimed, run to completion even if the client goes away: the
    # work may commit, and its response must be stored for the retry.
    with trio.CancelScope(shield=True):
        try:
            reply = await run()
        except PaycastError as exc:
            reply = error_reply(exc)
        except BaseException:
            await keys.release(merchant_id, key)
            raise
        if reply.status == 400 or reply.status >= 500:
            await keys.release(merchant_id, key)
        else:
            await keys.complete(merchant_id, key, reply.status, reply.body.decode())
    return reply


def idempotent(handler):
    """Route decorator (inside ``merchant_required``) implementing ``Idempotency-Key``."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(*args, **kwargs)

        async def run() -> Reply:
            return await reply_of_response(await handler(*args, **kwargs))

        req = request._get_current_object()
        return response_of(await once(components().idempotency_keys, g.merchant_id, key, req.method, req.path,
                                      read_raw, run))

    return wrapper
