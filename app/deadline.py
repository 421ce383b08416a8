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
:data:`app.asgi_routes.BODY_TIMEOUT_S`, answered 408) and restarts from
the body's last chunk. WebSockets are not HTTP requests here and are never
timed (they live for hours).

How: the app runs in the request's own task, inside a cancel scope; one
watchdog task per process (:class:`_Watchdog`) keeps every request's deadline,
which the body reads move. The answer does not need the app's cooperation: an
app stuck in a cancel shield (an idempotent handler runs to completion,
:mod:`app.idempotency`) still has its client answered and its connection
closed by the watchdog; the request ends when its shielded work does, and
whatever it sends then is dropped. (Until issue 22 the app ran as a child task
of a nursery per request: ~40 µs of CPU per request on the busy box.)

Clients that go away: quart-trio used to give every request a reader task that
cancelled the request at ``http.disconnect`` (a client that gave up, e.g. on its
own timeout, stops costing the server its work). Quart now runs without it
(:mod:`app.quart_http`), so the watchdog gives a request that is still running
after :data:`LATE_READER_AFTER_S` a reader (:meth:`_Progress.read_late`): it reads
the request's messages for the app (which then receives them from it) and, at
``http.disconnect`` before the response is complete, cancels the request as
quart-trio did. Short requests never get one; a client gone while its body is
read ends the request at once (the app's own read sees the disconnect). Only
apps that ask for it (:data:`CANCEL_ON_DISCONNECT` in the scope: Quart's
requests) are watched, and only while the deadline is on (not 0).
"""

from __future__ import annotations

import collections
import logging
import math

import orjson
import trio

from app.body import send_json
from app.request_ids import request_id_of
from domain.errors import Unavailable
from telemetry import logs

log = logging.getLogger("paycast.http")
SWEEP_S = 1.0  # the watchdog drops answered requests from its queue at least this often
# A request still running this long gets a reader that cancels it if its client goes away
# (module docstring); found within SWEEP_S after that.
LATE_READER_AFTER_S = 1.0
# The ASGI scope key an app sets (true) to be cancelled when its client goes away (app.quart_http
# sets it for Quart's requests; the gateway webhooks run to their end, app/webhooks_endpoint.py).
CANCEL_ON_DISCONNECT = "paycast.cancel_on_disconnect"


def deadline_error(deadline_s: float) -> Unavailable:
    """The 503 of a request given up at its deadline."""
    return Unavailable(f"The request was not answered within the server's {deadline_s:g} s deadline and was "
                       "stopped. Retry it (with the same Idempotency-Key, if it had one).")


class _Progress:
    """What the app did with one request, and the clock of its server time."""

    __slots__ = ("deadline_s", "deadline", "scope", "send_to", "body_done", "started", "given_up", "finished",
                 "answered", "watchdog", "request_scope", "receiving", "completing", "inbox", "inbox_ready",
                 "reader_scope", "receive_from")

    def __init__(self, deadline_s: float, watchdog: "_Watchdog", scope: dict, receive, send) -> None:
        self.deadline_s = deadline_s
        self.watchdog = watchdog
        self.scope = scope
        self.receive_from = receive  # the server's receive, for the late reader
        self.send_to = send  # the server's send, for the 503
        self.body_done = False
        self.started = False  # http.response.start was handed to the server
        self.given_up = False
        self.finished = False
        self.answered: trio.Event | None = None  # set once the watchdog's answer went out
        self.receiving = False  # the app waits in receive (the late reader is not started then)
        self.completing = False  # the response's last message went to the server
        self.inbox: collections.deque | None = None  # messages the late reader read, for the app
        self.inbox_ready: trio.Event | None = None
        self.reader_scope: trio.CancelScope | None = None
        self.restart()
        watchdog.started.append((self.deadline, self))  # its first deadline: start + deadline_s

    def restart(self) -> None:
        """Server time runs again: the deadline is ``deadline_s`` from now."""
        self.deadline = trio.current_time() + self.deadline_s
        self.watchdog.watch(self)

    def receive(self, receive):
        async def source() -> dict:
            if self.inbox is None:
                return await receive()
            while not self.inbox:  # the late reader reads for the app
                self.inbox_ready = trio.Event()
                await self.inbox_ready.wait()
            return self.inbox.popleft()

        async def timed_receive() -> dict:
            self.receiving = True
            try:
                if self.body_done:
                    return await source()
                self.deadline = math.inf  # waiting for the client is not server time
                try:
                    message = await source()
                finally:
                    self.restart()
            finally:
                self.receiving = False
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
            return message

        return timed_receive

    async def read_late(self, receive, max_buffered: int) -> None:
        """The late reader (module docstring): reads the request's messages into the inbox the app
        receives from; at ``http.disconnect`` before the response's end, cancels the request.
        Stops reading (and watching) once ``max_buffered`` body bytes wait unread."""
        inbox = self.inbox
        buffered = 0
        try:
            with trio.CancelScope() as self.reader_scope:
                while not self.finished:
                    message = await receive()
                    if self.finished:
                        return  # ended while this message was handed over: it is nobody's
                    inbox.append(message)
                    if self.inbox_ready is not None:
                        self.inbox_ready.set()
                    if message["type"] == "http.disconnect":
                        if not self.completing and self.request_scope is not None:
                            log.info("client gone before its answer: %s %s cancelled",
                                     self.scope.get("method", ""), self.scope.get("path", ""))
                            self.request_scope.cancel()
                        return
                    buffered += len(message.get("body", b""))
                    if buffered > max_buffered:
                        return
        except Exception:  # noqa: BLE001 - a bug here must not end the watchdog
            log.exception("late reader failed")

    def send(self, send):
        async def tracked_send(message: dict) -> None:
            if self.given_up:
                return  # answered (or closed) by the deadline; the app's late messages go nowhere
            if message["type"] == "http.response.start":
                self.started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.completing = True
            await send(message)

        return tracked_send


class _Watchdog:
    """One task per process (a trio system task, started with the first request) that gives up
    the requests past their deadline, instead of a nursery and a task per request (issue 22:
    ~40 µs of CPU per request on the busy box, bench/edge_layers.py).

    Every deadline is set to ``now + deadline_s``, so deadlines are queued in the order
    they fall: a deque, checked from its head. A request whose clock moved (the body
    reads) is queued again and its older entry skipped.
    """

    def __init__(self, layer: "RequestDeadline") -> None:
        self.layer = layer
        self.queue: collections.deque[tuple[float, _Progress]] = collections.deque()
        # Every request by its first deadline (its start + deadline_s), for the late readers.
        self.started: collections.deque[tuple[float, _Progress]] = collections.deque()
        self.wakeup: trio.Event | None = None
        self.token = None  # the trio run whose system task serves the queue

    def watch(self, progress: _Progress) -> None:
        token = trio.lowlevel.current_trio_token()
        if token is not self.token:
            self.token = token
            self.queue.clear()
            self.started.clear()
            self.wakeup = None
            trio.lowlevel.spawn_system_task(self._run, name="http:deadlines")
        self.queue.append((progress.deadline, progress))
        if self.wakeup is not None:
            self.wakeup.set()

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    if self.started:
                        self._start_late_readers(nursery)
                    if not self.queue:
                        self.wakeup = trio.Event()
                        await self.wakeup.wait()
                        self.wakeup = None
                        continue
                    deadline, progress = self.queue[0]
                    if progress.finished or progress.deadline != deadline:
                        self.queue.popleft()  # answered, or its clock moved (queued again)
                        continue
                    if deadline > trio.current_time():
                        # At least once a second, so that answered requests leave the queue
                        # soon (an entry is a few small objects; its request's are released).
                        await trio.sleep_until(min(deadline, trio.current_time() + SWEEP_S))
                        continue
                    self.queue.popleft()
                    progress.given_up = True
                    progress.answered = trio.Event()
                    nursery.start_soon(self._give_up, progress)
        except Exception:  # pragma: no cover - a bug here must not end the trio run
            log.exception("request deadline watchdog failed; requests are no longer timed")
            self.token = None

    def _start_late_readers(self, nursery: trio.Nursery) -> None:
        late = trio.current_time() - LATE_READER_AFTER_S + self.layer.deadline_s  # as a first deadline
        started = self.started
        while started and started[0][0] <= late:
            progress = started.popleft()[1]
            if progress.finished or progress.given_up or progress.receiving or progress.completing \
                    or progress.receive_from is None or not progress.scope.get(CANCEL_ON_DISCONNECT):
                continue
            progress.inbox = collections.deque()  # from now on the app receives what the reader read
            nursery.start_soon(progress.read_late, progress.receive_from, self.layer.max_buffered,
                               name="http:late-reader")

    async def _give_up(self, progress: _Progress) -> None:
        try:
            progress.request_scope.cancel()
            await self.layer._give_up(progress.scope, progress.send_to, progress)
        except Exception:  # noqa: BLE001 - the connection may be gone already
            log.exception("could not answer a request past its deadline")
        finally:
            progress.answered.set()


class RequestDeadline:
    """ASGI middleware enforcing the per-request deadline described in the module docstring.

    Args:
      app: the next ASGI app.
      deadline_s: the server time a request may take; 0 turns the guard off.
      metrics: the app's :class:`telemetry.app_metrics.Metrics` (``deadline_exceeded``).
    """

    def __init__(self, app, deadline_s: float, metrics, max_buffered: int = 1024 * 1024) -> None:
        self.app = app
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.max_buffered = max_buffered  # the most body bytes a late reader holds for the app (the body limit)
        self.watchdog = _Watchdog(self)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.deadline_s:
            return await self.app(scope, receive, send)
        request_id_of(scope)  # chosen now, so the 503 and the app's log lines share it
        progress = _Progress(self.deadline_s, self.watchdog, scope, receive, send)
        try:
            with trio.CancelScope() as progress.request_scope:
                await self.app(scope, progress.receive(receive), progress.send(send))
        finally:
            progress.finished = True
            if progress.reader_scope is not None:
                progress.reader_scope.cancel()
        if progress.given_up:  # the watchdog answers (or closes): the request ends when that is done
            with trio.CancelScope(shield=True):
                await progress.answered.wait()
        # The queues may hold it a while.
        progress.scope = progress.send_to = progress.receive_from = progress.request_scope = None
        progress.inbox = progress.reader_scope = None

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
