"""``Idempotency-Key`` on POST: execute once, replay the stored response after.

The first completed response (status + body) is stored per merchant and
replayed byte for byte with ``Idempotent-Replayed: true``; 400 validation
failures (and 5xx) are not stored, so the client can fix and retry.
"""

from __future__ import annotations

import functools
import hashlib
import orjson

import trio
from quart import Response, g, request

from app.body import read_raw
from app.context import components
from app.errors import error_response
from domain.errors import InvalidRequest, PaycastError

MAX_KEY_LENGTH = 255


def _request_hash(raw: bytes) -> str:
    try:  # canonical JSON, so re-serialising the same parameters is "the same request"
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):
        canonical = raw
    return hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + canonical).hexdigest()


def idempotent(handler):
    """Route decorator (inside ``merchant_required``) implementing ``Idempotency-Key``."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(*args, **kwargs)
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                                 param="Idempotency-Key")
        keys = components().idempotency_keys
        merchant_id = g.merchant_id
        stored = await keys.claim(merchant_id, key, _request_hash(await read_raw()))
        if stored is not None:
            return Response(stored.body, status=stored.status, content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
        # Once claimed, run to completion even if the client goes away: the
        # work may commit, and its response must be stored for the retry.
        with trio.CancelScope(shield=True):
            try:
                response = await handler(*args, **kwargs)
            except PaycastError as exc:
                response = error_response(exc)
            except BaseException:
                await keys.release(merchant_id, key)
                raise
            if response.status_code == 400 or response.status_code >= 500:
                await keys.release(merchant_id, key)
            else:
                body = await response.get_data(as_text=True)
                await keys.complete(merchant_id, key, response.status_code, body)
        return response

    return wrapper
