"""The connection actor: one per WebSocket, two tasks, carrying out what
:class:`domain.realtime_delivery.Delivery` decides.

``actor:connection:<id>`` is the only writer of the socket: it sends the
``welcome``, then asks the delivery state what to do next (send queued frames,
re-read from the database, close, wait). ``actor:connection:<id>:recv`` reads
the client's frames and carries out what each one means (reply, check a topic,
record an ack).

Fast path: while the writer waits with nothing queued, the hub's offer comes
back as :class:`WriteNow` and this actor writes it from the hub's task,
synchronously, if the socket can take it without blocking
(``Socket.write_now``): no task wake-up, no checkpoint, in order by
construction because nothing else is pending for this connection. Whatever the
kernel does not take is queued as raw bytes, ahead of anything later.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

import trio

from domain.errors import Unavailable
from domain.realtime import Claims, welcome_frame
from domain.realtime_delivery import (ABORT, CLOSE_GOING_AWAY, CLOSE_TIMEOUT_S, SLOW, WAKE, Acked, Batch,
                                      CheckTopic, CloseSocket, Delivery, ReadLog, Reply, Send, Wait, WriteNow)
from storage import realtime as store
from telemetry import metrics

log = logging.getLogger("paycast.realtime")

__all__ = ["Batch", "Connection", "Socket", "CLOSE_GOING_AWAY"]


class SocketClosed(Exception):
    """The client (or the server under it) closed the WebSocket: raised by :meth:`Socket.receive`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"WebSocket closed ({code})")
        self.code = code


class Socket(Protocol):
    """What the actor needs of a WebSocket (``app.realtime_socket.AsgiSocket``)."""

    async def send_many(self, texts: list[str]) -> None:
        """Send text frames in order (in one write when the server allows it)."""

    def write_now(self, texts: list[str]) -> bytes | None:
        """Write frames without blocking if possible.

        Returns:
          None if this cannot be done now (nothing was written); else the
          encoded bytes the kernel did not take (``b""`` when all went out),
          which must be sent with :meth:`send_raw` before anything else.
        """

    async def send_raw(self, data: bytes) -> None:
        """Send bytes from :meth:`write_now` that the kernel did not take."""

    async def receive(self) -> str | bytes:
        """The next frame; raises :class:`SocketClosed` once the peer is gone."""

    async def close(self, code: int, reason: str = "") -> None: ...


def _no_ack(seq: int) -> None:
    return None


class Connection:
    """One client's WebSocket.

    Args:
      connection_id: ``conn_...``, also in the welcome frame and task names.
      claims: the verified token.
      db: the database (for replay and topic ownership).
      settings: queue size, slow-consumer grace, frame limit.
      on_slow: called once when this connection is closed as a slow consumer.
      on_ack: called with each higher ``seq`` the client acknowledges.
    """

    __slots__ = ("id", "merchant_id", "client_id", "device_id", "issued_at_ms", "key", "delivery", "_db", "_ws",
                 "_write_now", "_on_slow", "_on_ack", "_wake", "_scope")

    def __init__(self, connection_id: str, claims: Claims, db, settings, *, on_slow: Callable[[], None] = lambda: None,
                 on_ack: Callable[[int], None] | None = None) -> None:
        self.id = connection_id
        self.merchant_id = claims.merchant_id
        self.client_id = claims.client_id
        self.device_id = claims.device_id
        self.issued_at_ms = claims.issued_at_ms
        self.key = (claims.merchant_id, claims.client_id)
        self.delivery = Delivery(claims.device_id, capacity=settings.realtime_queue_size,
                                 slow_s=settings.realtime_slow_consumer_s,
                                 max_frame=settings.realtime_max_frame_bytes, now=trio.current_time(),
                                 ping_head_start=random.uniform(0, settings.realtime_ping_s / 2))
        self._db = db
        self._ws: Socket | None = None
        self._write_now: Callable[[list[str]], bytes | None] | None = None
        self._on_slow = on_slow
        self._on_ack = on_ack or _no_ack
        self._wake = trio.Event()
        self._scope: trio.CancelScope | None = None

    # ------------------------------------------------------------ state the hub reads

    @property
    def cursor(self) -> int:
        return self.delivery.cursor

    @property
    def muted(self) -> set[str]:
        return self.delivery.muted

    @property
    def closing(self) -> tuple[int, str] | None:
        return self.delivery.closing

    # ------------------------------------------------------------ called by the hub (never block)

    def offer(self, batch: Batch, now: float | None = None) -> None:
        """Deliver a live batch (written at once if the writer is idle, else queued or re-read later).

        ``now``: the hub reads the clock once for all connections it offers a batch to.
        """
        decision = self.delivery.offer(batch, trio.current_time() if now is None else now)
        if decision is not None:
            self._do(decision)

    def offer_frame(self, text: str) -> None:
        """Deliver a control frame (ping, error)."""
        self._do(self.delivery.offer_frame(text, trio.current_time()))

    def catch_up(self) -> None:
        """Re-read from the database from the cursor on (after a lost notification)."""
        self._do(self.delivery.catch_up())

    def request_close(self, code: int, reason: str) -> None:
        """Ask the writer to send a close frame and stop (first request wins)."""
        self._do(self.delivery.request_close(code, reason, trio.current_time()))

    def check(self, now: float, ping_s: float, idle_s: float) -> None:
        """The heartbeat's visit."""
        self._do(self.delivery.tick(now, ping_s, idle_s))

    def abort(self) -> None:
        """Stop both tasks now, without a close frame (a socket that no longer drains or is gone)."""
        if self._scope is not None:
            self._scope.cancel()

    def _do(self, decision) -> None:
        """Carry out a decision of the delivery state (never blocks)."""
        while decision is not None:
            if isinstance(decision, WriteNow):
                rest = self._write_now(decision.frames) if self._write_now is not None else None
                if rest is not None:
                    metrics.REALTIME_MESSAGES.inc(len(decision.frames))
                # No clock read when everything went out (the common case): it is only for pressure.
                decision = self.delivery.written_now(decision, rest, 0.0 if rest == b"" else trio.current_time())
            elif decision is WAKE:
                self._wake.set()
                return
            elif decision is SLOW:
                self._on_slow()
                self._wake.set()
                return
            elif decision is ABORT:
                log.warning("connection %s: socket stuck or close unanswered; dropping it", self.id)
                self.abort()
                return
            else:
                raise AssertionError(decision)

    # ------------------------------------------------------------ the actor

    async def run(self, ws: Socket, after_seq: int | None) -> None:
        """Serve the socket until it closes.

        Args:
          ws: the accepted WebSocket.
          after_seq: replay messages after this seq first; None means live
            only (the cursor must already be set to the client's latest seq).
        """
        self._ws = ws
        self._write_now = getattr(ws, "write_now", None)
        self.delivery.start(after_seq)
        # The writer is this task itself (renamed for /debug/tasks), the reader
        # its one child: a task less per connection than a writer child would be.
        trio.lowlevel.current_task().name = f"actor:connection:{self.id}"
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._read, name=f"actor:connection:{self.id}:recv")
            await self._write(nursery.cancel_scope)

    async def _send(self, texts: list[str]) -> None:
        self.delivery.send_began(trio.current_time())
        await self._ws.send_many(texts)
        self.delivery.send_ended(len(texts))
        metrics.REALTIME_MESSAGES.inc(len(texts))

    async def _write(self, stop: trio.CancelScope) -> None:
        delivery = self.delivery
        try:
            await self._send([welcome_frame(self.id, self.client_id, self.device_id)])
            while True:
                self._wake = trio.Event()
                step = delivery.next_step(trio.current_time())
                if isinstance(step, Send):
                    for part in step.parts:
                        if isinstance(part, bytes):
                            delivery.send_began(trio.current_time())
                            await self._ws.send_raw(part)
                            delivery.send_ended(0)
                        else:
                            await self._send(part)
                elif isinstance(step, Wait):
                    if step.until is None:
                        await self._wake.wait()
                    else:
                        with trio.move_on_at(step.until):
                            await self._wake.wait()
                elif isinstance(step, ReadLog):
                    try:
                        page = await self._db.transaction(store.read_after, self.merchant_id, self.client_id,
                                                          step.after_seq, step.limit)
                    except Unavailable:
                        delivery.read_failed(trio.current_time())
                        continue
                    frames = delivery.replayed(page, step.limit)
                    if frames:
                        await self._send(frames)
                elif isinstance(step, CloseSocket):
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await self._ws.close(step.code, step.reason)
                    return
        finally:
            stop.cancel()

    async def _read(self) -> None:
        delivery = self.delivery
        while delivery.closing is None:
            try:
                raw = await self._ws.receive()
            except SocketClosed:
                self.abort()  # the peer is gone: nothing more to write either
                return
            decision = delivery.received(raw, trio.current_time())
            if isinstance(decision, Reply):
                self.offer_frame(decision.frame)
            elif isinstance(decision, CheckTopic):
                try:
                    owned = await self._db.transaction(store.owns_topic, self.merchant_id, self.client_id,
                                                       decision.topic)
                except Unavailable:
                    owned = None
                reply = delivery.topic_checked(decision.topic, owned)
                if reply is not None:
                    self.offer_frame(reply.frame)
            elif isinstance(decision, Acked):
                self._on_ack(decision.seq)
            else:
                self._do(decision)
