"""Finish every HTTP/1.1 exchange so that hypercorn can reuse (or close) the connection.

Why (docs/upstream/hypercorn-h11-recycle-cancelled.md): hypercorn's
HTTP/1.1 protocol decides what happens to a keep-alive connection — recycle it
for the next request, or close it — *inside the ASGI app's own* ``send`` of the
last response message (``H11Protocol._maybe_recycle``), under the app's cancel
scopes. Its first step queues ``http.disconnect`` for the app; quart-trio's
message reader returns on that message and cancels the request's nursery — the
very scope that ``send`` runs in. When the response was complete before the
request body had been read to its end (a 405 answered from the request head,
the body still on the wire), hypercorn takes its "close" branch, whose first
checkpoint (``send_eof``) raises ``Cancelled``: the socket is never closed, the
h11 state is left "response done, request body pending" with no stream, and
the next request on that connection is parked (``h11.PAUSED``) waiting for a
wake-up that never comes. No error, no log, no idle timeout: the connection is
held for good.

What this layer does, outermost in :func:`app.server.asgi_edge`:

1. Before ``http.response.start`` goes out while the request body has not been
   read to its end, it reads and discards the rest (at most ``drain_bytes``,
   for at most ``drain_timeout_s``), so hypercorn sees both sides done and
   recycles the connection. When it gives up, the response says
   ``Connection: close`` and hypercorn closes cleanly (the client knows not
   to reuse it).
   (An app that starts a response and then streams the request body into it
   would lose that body: no route of ours does; ours answer after reading.)
2. The last response message is sent in a cancel shield, so hypercorn's
   recycle-or-close runs to its end whatever the app's scopes do.
3. While that last message is sent, a task keeps reading the request's
   messages, so hypercorn's bounded queue to the app can never be full when it
   adds ``http.disconnect`` (an app that answered without reading a large
   body would otherwise deadlock hypercorn's reader and that ``send``).
"""

from __future__ import annotations

import trio

# Long enough for a client that sends the head and the body in two writes (the
# usual case: http.client, urllib3, requests) and for a body of the size limit
# on a slow link; short enough that a client holding its body back only delays
# an early answer, which then closes the connection.
DRAIN_TIMEOUT_S = 2.0


def _declares_no_body(scope: dict) -> bool:
    """No ``Content-Length`` (or 0) and no ``Transfer-Encoding``: the body is one empty message,
    which hypercorn queues with the request head (h11 ends such a message with its head)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return False
    return True


class _Flag:
    """A trio.Event made on first wait: most requests only set and test it (issue 22, branch quart)."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


def _says_close(message: dict) -> bool:
    return any(name.lower() == b"connection" and b"close" in value.lower()
               for name, value in message.get("headers", ()))


class _Exchange:
    """One request's view of its body: whether the app (or this layer) read it to its end."""

    def __init__(self, receive) -> None:
        self._receive = receive
        self.body_done = _Flag()
        self.drained = 0

    async def receive(self) -> dict:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done.set()
        return message

    async def drain(self, limit: int, timeout_s: float) -> bool:
        """Read and discard the body's rest; other readers (the app) may pull concurrently.

        Returns:
          True when the body was read to its end within ``limit`` bytes and ``timeout_s``.
        """
        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as nursery:

                async def pull() -> None:
                    while not self.body_done.is_set() and self.drained <= limit:
                        self.drained += len((await self.receive()).get("body", b""))
                    nursery.cancel_scope.cancel()  # done, or over the limit: stop waiting

                nursery.start_soon(pull, name="http:drain-body")
                await self.body_done.wait()  # set by pull or by the app's own read
                nursery.cancel_scope.cancel()
        return self.body_done.is_set()

    async def discard_until_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


class CompleteExchange:
    """ASGI middleware: complete each HTTP exchange as described in the module docstring.

    Args:
      app: the next ASGI app.
      drain_bytes: the most body bytes read and discarded after an early answer
        (the body limit: a declared larger body is refused and drained by
        :class:`app.limits.BodyLimit`).
      drain_timeout_s: how long an early answer waits for the body's rest.
    """

    def __init__(self, app, drain_bytes: int, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self.app = app
        self.drain_bytes = drain_bytes
        self.drain_timeout_s = drain_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        exchange = _Exchange(receive)

        async def complete_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                if not exchange.body_done.is_set() and _declares_no_body(scope):
                    # Its one empty message is queued already: read it here, no drain task (issue 22:
                    # a GET whose app never reads its body cost a nursery and a task).
                    await exchange.receive()
                if not exchange.body_done.is_set() and not _says_close(message) \
                        and not await exchange.drain(self.drain_bytes, self.drain_timeout_s):
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    if exchange.body_done.is_set():
                        await send(message)
                        return
                    # A nursery only when a reader is needed (issue 22: one per request
                    # was ~70 µs of CPU on the busy box, bench/edge_layers.py).
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(exchange.discard_until_disconnect, name="http:discard-body")
                        await send(message)
                        nursery.cancel_scope.cancel()  # hypercorn is done with this request
            else:
                await send(message)

        await self.app(scope, exchange.receive, complete_send)
