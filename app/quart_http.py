"""What Quart does per HTTP request, trimmed by subclasses we own (issue 22, "the edge").

quart-trio serves each request with a nursery and two tasks
(``quart_trio.asgi.TrioASGIHTTPConnection``): one reads the request's ASGI
messages into the request body, and cancels the other when ``http.disconnect``
comes; the other runs the app and sends the response (bounded by
``RESPONSE_TIMEOUT``), then cancels the reader. What the same request costs
here instead (bench/edge_layers.py and bench/RESULTS.md, "Issue 22 (branch
quart)"):

- :class:`InlineHTTPConnection`: the app runs in the task hypercorn gave the
  request (no nursery, no tasks); the body is read from ``receive`` by whoever
  awaits it (:class:`PulledBody`, under Quart's own ``BODY_TIMEOUT``: 408); the
  response is sent under ``RESPONSE_TIMEOUT`` as before, and a response whose
  body is in memory (every route of ours; streamed bodies still go chunk by
  chunk) leaves as two ASGI messages instead of three (no empty closing body
  message through every layer and hypercorn).
- :class:`CycleFreeMap`: werkzeug's URL matcher without its recursive closure,
  which made a reference cycle (garbage for the cycle collector) per request.

Behaviour kept: body limits (``MAX_CONTENT_LENGTH`` → 413, the same
``RequestEntityTooLarge``), the body timeout (408), streaming responses,
errors (the same handlers; an exception Quart does not handle reaches hypercorn
as before, unwrapped from the nursery's group). Disconnects: a client gone
*while its body is read* cancels the request at once, as before; a client gone
*after* its body was read cancels it once the request has run
:data:`app.deadline.LATE_READER_AFTER_S` (the per-process deadline watchdog then
gives it a reader, :meth:`app.deadline._Progress.read_late`, marked by
:data:`app.deadline.CANCEL_ON_DISCONNECT` in the scope) instead of at its next
checkpoint: a request shorter than that runs to its end and its answer is
dropped by hypercorn. Writes under an ``Idempotency-Key`` run to completion in
a shield, as before.
"""

from __future__ import annotations

import re
from typing import Any, cast

import trio
from quart.routing import QuartMap
from quart.wrappers import Response
from quart.wrappers.response import DataBody
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.routing.exceptions import NoMatch, RequestAliasRedirect, RequestPath
from werkzeug.routing.matcher import SlashRequired, StateMachineMatcher, ValidationError

from app.deadline import CANCEL_ON_DISCONNECT


class PulledBody(TrioBody):
    """A request body read from the ASGI ``receive`` by the task that awaits (or iterates) it,
    instead of filled by a reader task; plain flags instead of two trio events (nobody else
    waits). :meth:`append`, :meth:`set_complete` and :meth:`set_result` still work (Quart's
    test request context fills a body that way)."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        self._data = bytearray()
        self._max_content_length = max_content_length
        self._must_raise: Exception | None = None
        self.complete = False
        self.receive = None  # the request's ASGI receive; set by InlineHTTPConnection
        self.request_scope: trio.CancelScope | None = None  # cancelled when the client goes away mid-body
        if expected_content_length is not None and max_content_length is not None \
                and expected_content_length > max_content_length:
            self._must_raise = RequestEntityTooLarge()

    def append(self, data: bytes) -> None:
        if data == b"" or self._must_raise is not None:
            return
        self._data.extend(data)
        if self._max_content_length is not None and len(self._data) > self._max_content_length:
            self._must_raise = RequestEntityTooLarge()
            self.complete = True

    def set_complete(self) -> None:
        self.complete = True

    async def _pull(self) -> None:
        message = await self.receive()
        if message["type"] == "http.request":
            self.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
            return
        # http.disconnect before the body's end: the request is over, as quart-trio's reader
        # cancelling the request's nursery made it.
        self._must_raise = ClientDisconnected()
        self.complete = True
        if self.request_scope is not None:
            self.request_scope.cancel()
            await trio.lowlevel.checkpoint()  # raises Cancelled unless a shield holds it
        raise self._must_raise

    def __await__(self):
        return self._whole().__await__()

    async def _whole(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        while not self.complete:
            await self._pull()
        if self._must_raise is not None:
            raise self._must_raise
        return bytes(self._data)

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        while not self._data and not self.complete:
            await self._pull()
        if self.complete and len(self._data) == 0:
            raise StopAsyncIteration()
        data = bytes(self._data)
        self._data.clear()
        return data


class PaycastRequest(TrioRequest):
    body_class = PulledBody


class InlineHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection without the nursery and two tasks per request (module docstring)."""

    async def __call__(self, receive, send) -> None:
        request = self._create_request_from_scope(send)
        body = request.body
        if not isinstance(body, PulledBody):  # pragma: no cover - another request_class: as quart-trio does
            return await self._handle_in_tasks(request, receive, send)
        body.receive = receive
        # Cancelled if the client goes away (app.deadline's late reader; quart-trio's reader task did it).
        self.scope[CANCEL_ON_DISCONNECT] = True
        with trio.CancelScope() as scope:
            body.request_scope = scope
            response = await self.app.handle_request(request)
            if isinstance(response, Response) and response.timeout != Ellipsis:
                timeout = cast(float | None, response.timeout)
            else:
                timeout = self.app.config["RESPONSE_TIMEOUT"]
            if timeout is None:
                await self._send_response(send, response)
            else:
                with trio.move_on_after(timeout):
                    await self._send_response(send, response)
        body.receive = body.request_scope = None

    async def _handle_in_tasks(self, request, receive, send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handle_messages, nursery, request, receive)
            nursery.start_soon(self.handle_request, nursery, request, send)

    async def _send_response(self, send, response) -> None:
        if not isinstance(response, Response) or type(response.response) is not DataBody:
            return await super()._send_response(send, response)  # streamed, or werkzeug's: as Quart does
        data = response.response
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(key.lower().encode(), value.encode()) for key, value in response.headers.items()]})
        await send({"type": "http.response.body", "body": data.data[data.begin:data.end], "more_body": False})


def _match(state, parts: list[str], values: list[str], method: str, websocket: bool, seen: list) -> Any:
    """werkzeug 3.1's ``StateMachineMatcher.match`` inner ``_match``, a module function instead of a
    recursive closure (which was a reference cycle per call). ``seen`` is
    ``[have_match_for, websocket_mismatch]``, the closure's ``nonlocal``s."""
    if parts == []:
        for rule in state.rules:
            if rule.methods is not None and method not in rule.methods:
                seen[0].update(rule.methods)
            elif rule.websocket != websocket:
                seen[1] = True
            else:
                return rule, values
        if "" in state.static:
            for rule in state.static[""].rules:
                if websocket == rule.websocket and (rule.methods is None or method in rule.methods):
                    if rule.strict_slashes:
                        raise SlashRequired()
                    return rule, values
        return None

    part = parts[0]
    if part in state.static:
        rv = _match(state.static[part], parts[1:], values, method, websocket, seen)
        if rv is not None:
            return rv
    for test_part, new_state in state.dynamic:
        target = part
        remaining = parts[1:]
        if test_part.final:
            target = "/".join(parts)
            remaining = []
        match = re.compile(test_part.content).match(target)
        if match is not None:
            if test_part.suffixed:
                suffix = match.groups()[-1]
                if suffix == "/":
                    remaining = [""]
            converter_groups = sorted((item for item in match.groupdict().items() if item[0].startswith("__werkzeug_")),
                                      key=lambda item: int(item[0][11:]))
            groups = [item[1] for item in converter_groups]
            rv = _match(new_state, remaining, values + groups, method, websocket, seen)
            if rv is not None:
                return rv

    if parts == [""]:
        for rule in state.rules:
            if rule.strict_slashes:
                continue
            if rule.methods is not None and method not in rule.methods:
                seen[0].update(rule.methods)
            elif rule.websocket != websocket:
                seen[1] = True
            else:
                return rule, values
    return None


class CycleFreeMatcher(StateMachineMatcher):
    """werkzeug's matcher, the same results, without a reference cycle per match (see :func:`_match`)."""

    def match(self, domain: str, path: str, method: str, websocket: bool):
        seen: list = [set(), False]
        try:
            rv = _match(self._root, [domain, *path.split("/")], [], method, websocket, seen)
        except SlashRequired:
            raise RequestPath(f"{path}/") from None

        if self.merge_slashes and rv is None:
            path = re.sub("/{2,}", "/", path)
            try:
                rv = _match(self._root, [domain, *path.split("/")], [], method, websocket, seen)
            except SlashRequired:
                raise RequestPath(f"{path}/") from None
            if rv is None or rv[0].merge_slashes is False:
                raise NoMatch(seen[0], seen[1])
            raise RequestPath(f"{path}")
        elif rv is not None:
            rule, values = rv
            result = {}
            for name, value in zip(rule._converters.keys(), values):
                try:
                    value = rule._converters[name].to_python(value)
                except ValidationError as e:
                    raise NoMatch(seen[0], seen[1]) from e
                result[str(name)] = value
            if rule.defaults:
                result.update(rule.defaults)
            if rule.alias and rule.map.redirect_defaults:
                raise RequestAliasRedirect(result, rule.endpoint)
            return rule, result

        raise NoMatch(seen[0], seen[1])


class CycleFreeMap(QuartMap):
    """Quart's URL map with :class:`CycleFreeMatcher`."""

    def __init__(self, rules=None, *args, **kwargs) -> None:
        super().__init__(None, *args, **kwargs)
        self._matcher = CycleFreeMatcher(self._matcher.merge_slashes)
        for rule_factory in rules or ():
            self.add(rule_factory)

