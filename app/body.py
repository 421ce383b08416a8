"""Reading request bodies and writing JSON responses.

The body is read once (bounded by ``MAX_CONTENT_LENGTH``), parsed with a depth
limit, and validated by a pydantic model whose errors name the offending
``param``.
"""

from __future__ import annotations

import orjson
from typing import NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, request

from domain.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 32  # the contract (docs/api.md): JSON nested deeper than 32 levels gets 400


class Headers(Protocol):
    """A request's headers: Quart's, or an ASGI endpoint's (:class:`app.asgi_routes.AsgiHeaders`)."""

    def get(self, name: str) -> str | None:
        """The header's value (case-insensitive name), or None."""


class Reply(NamedTuple):
    """A whole JSON response as both edges write it: Quart's routes (:func:`response_of`) and
    the endpoints served in front of Quart (:func:`send_json`)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # beyond content-type, content-length and Request-Id


def json_reply(body: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), headers)


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, headers=headers,
                    content_type="application/json")


def response_of(reply: Reply) -> Response:
    """``reply`` as a Quart response (JSON unless its headers name another type)."""
    has_type = any(name.lower() == "content-type" for name, _ in reply.headers)
    return Response(reply.body, status=reply.status, headers=list(reply.headers),
                    content_type=None if has_type else "application/json")


async def reply_of_response(response: Response) -> Reply:
    """A Quart route's response as a :class:`Reply` (what ``Idempotency-Key`` stores and replays)."""
    headers = tuple((name, value) for name, value in response.headers.items() if name.lower() != "content-length")
    return Reply(response.status_code, await response.get_data(as_text=False), headers)


async def send_json(send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] | list = (), *,
                    kind: str = "http") -> None:
    """A whole JSON response through an ASGI ``send``, for the edges served in front of Quart.

    Args:
      body: the encoded JSON.
      headers: more headers, after ``content-type`` and ``content-length``.
      kind: ``http``, or ``websocket.http`` to answer a WebSocket handshake
        (the ``websocket.http.response`` extension).
    """
    await send({"type": f"{kind}.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": f"{kind}.response.body", "body": body})


def _depth(value: object, limit: int) -> bool:
    """True if ``value`` nests no deeper than ``limit`` (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def validated(model: type[M], raw: bytes) -> M:
    """``raw`` parsed and validated as ``model``.

    Raises:
      InvalidRequest: bad JSON, not an object, or a bad field (``param`` names it).
    """
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc) from None


def parse_json(raw: bytes) -> object:
    """Parse a request body.

    Raises:
      InvalidRequest: not UTF-8 JSON, or nested deeper than 32 levels.
    """
    if not raw.strip():
        return {}
    if b"\x00" in raw or b"\\u0000" in raw:
        # PostgreSQL text and jsonb cannot hold NUL; refuse it at the door, not as a 500.
        raise InvalidRequest("NUL characters are not allowed in the request body.")
    # Cheap pre-check before parsing so a "[[[[..." bomb never recurses.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not _bracket_depth_ok(raw):
        raise InvalidRequest(f"JSON is nested deeper than {MAX_DEPTH} levels.")
    try:
        value = orjson.loads(raw)  # integers beyond 64 bits are refused as invalid JSON
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("Invalid JSON in the request body.") from None
    if not _depth(value, MAX_DEPTH):
        raise InvalidRequest(f"JSON is nested deeper than {MAX_DEPTH} levels.")
    return value


def _bracket_depth_ok(raw: bytes) -> bool:
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def pydantic_error(exc: ValidationError) -> InvalidRequest:
    """The first validation error as an :class:`InvalidRequest` naming its param."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    param = ".".join(loc) or None
    kind = err["type"]
    if kind == "extra_forbidden":
        return InvalidRequest(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")
    if kind == "missing":
        return InvalidRequest(f"Missing required param: {param}.", param=param, code="parameter_missing")
    message = err["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"Invalid {param}: {message}", param=param, code="parameter_invalid")


async def read_raw() -> bytes:
    """The raw body (cached by Quart, so idempotency hashing and parsing share it)."""
    return await request.get_data(cache=True, as_text=False)


async def parse(model: type[M]) -> M:
    """Read, parse and validate the body as ``model``.

    Raises:
      InvalidRequest: bad JSON, not an object, or a bad field (``param`` names it).
    """
    return validated(model, await read_raw())


def page_params(*, extra_filters: tuple[str, ...] = ()) -> tuple[int, str | None, dict[str, str | None]]:
    """``limit``, ``starting_after`` and the named filters from the query string.

    Raises:
      InvalidRequest: ``limit`` not an integer in 1..100.
    """
    args = request.args
    raw = args.get("limit", "10")
    # isascii: "²".isdigit() is True but int("²") raises.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 3 or not 1 <= int(raw) <= 100:
        raise InvalidRequest("limit must be an integer between 1 and 100.", param="limit")
    filters = {name: args.get(name) or None for name in extra_filters}
    return int(raw), args.get("starting_after") or None, filters
