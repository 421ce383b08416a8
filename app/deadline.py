"""A per-request deadline: a request the server stops answering is answered 503 and its connection closed.

Why: a request whose handler waits for something that never comes (a lock, a
lost wake-up, a bug) must not hold its client and its keep-alive connection
for good. Past ``PAYCAST_REQUEST_DEADLINE_S`` of server time the request is
given up: answered ``503`` ``api_error`` ``unavailable`` with ``Connection:
close`` (a client retries it; an ``Idempotency-Key`` makes the retry safe), or,
when its response had already begun, its connection is closed mid-response.
Either way it is logged with its request id and counted in
``paycast_http_deadline_exceeded_total``.

Server time, not wall time: the clock is stopped while the app waits for the
client's body (those reads are bounded by Quart's ``BODY_TIMEOUT`` and
:data:`app.webhooks_endpoint.BODY_TIMEOUT_S`, answered 408) and restarts from
the body's last chunk. WebSockets are not HTTP requests here and are never
timed (they live for hours).

How: the app runs as a child task while this layer waits for it on a cancel
scope whose deadline the body reads move. The answer does not need the app's
cooperation: an app stuck in a cancel shield (an idempotent handler runs to
completion, :mod:`app.idempotency`) still has its client answered and its
connection closed; its task ends when its shielded work does, and whatever it
sends then is dropped.
"""

from __future__ import annotations

import logging
import math

import orjson
import trio

from app.body import send_json
from app.request_ids import request_id_of
from domain.errors import Unavailable
from telemetry import logs

log = logging.getLogger("paycast.http")


def deadline_error(deadline_s: float) -> Unavailable:
    """The 503 of a request given up at its deadline."""
    return Unavailable(f"The request was not answered within the server's {deadline_s:g} s deadline and was "
                       "stopped. Retry it (with the same Idempotency-Key, if it had one).")


class _Progress:
    """What the app did with one request, and the clock of its server time."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.clock = trio.CancelScope(deadline=trio.current_time() + deadline_s)
        self.body_done = False
        self.started = False  # http.response.start was handed to the server
        self.given_up = False
        self.finished = trio.Event()

    def receive(self, receive):
        async def timed_receive() -> dict:
            if self.body_done:
                return await receive()
            self.clock.deadline = math.inf  # waiting for the client is not server time
            try:
                message = await receive()
            finally:
                self.clock.deadline = trio.current_time() + self.deadline_s
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
            return message

        return timed_receive

    def send(self, send):
        async def tracked_send(message: dict) -> None:
            if self.given_up:
                return  # answered (or closed) by the deadline; the app's late messages go nowhere
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        return tracked_send


class RequestDeadline:
    """ASGI middleware enforcing the per-request deadline described in the module docstring.

    Args:
      app: the next ASGI app.
      deadline_s: the server time a request may take; 0 turns the guard off.
      metrics: the app's :class:`telemetry.app_metrics.Metrics` (``deadline_exceeded``).
    """

    def __init__(self, app, deadline_s: float, metrics) -> None:
        self.app = app
        self.deadline_s = deadline_s
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.deadline_s:
            return await self.app(scope, receive, send)
        request_id_of(scope)  # chosen now, so the 503 and the app's log lines share it
        progress = _Progress(self.deadline_s)
        async with trio.open_nursery() as nursery:

            async def run_app() -> None:
                try:
                    await self.app(scope, progress.receive(receive), progress.send(send))
                finally:
                    progress.finished.set()

            nursery.start_soon(run_app, name=f"http:{scope.get('method', '')} {scope.get('path', '')}")
            with progress.clock:
                await progress.finished.wait()
            if not progress.finished.is_set():
                progress.given_up = True
                nursery.cancel_scope.cancel()
                await self._give_up(scope, send, progress)

    async def _give_up(self, scope, send, progress: _Progress) -> None:
        """Answer 503 and close, or close a response already begun (hypercorn closes a connection
        whose response the app left unfinished); log and count it."""
        request_id = request_id_of(scope)
        logs.request_id.set(request_id)
        method, path = scope.get("method", ""), scope.get("path", "")
        if progress.started:
            outcome = "closed"
        else:
            outcome = "answered_503"
            body = orjson.dumps(deadline_error(self.deadline_s).to_dict())
            with trio.CancelScope(shield=True):  # this scope's nursery is cancelled; the answer must still go
                await send_json(send, 503, body, [(b"request-id", request_id.encode()), (b"connection", b"close")])
        self.metrics.deadline_exceeded.labels(method, outcome).inc()
        log.error("request past its %g s deadline: %s %s %s", self.deadline_s, method, path,
                  "answered 503, connection closed" if outcome == "answered_503"
                  else "response already begun, connection closed")
