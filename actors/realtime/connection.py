"""The connection actor: one per WebSocket, two tasks.

``actor:connection:<id>`` is the only writer of the socket: it sends the
``welcome``, replays from the database, then delivers what the hub offers
through a bounded queue. ``actor:connection:<id>:recv`` reads and validates the
client's frames.

Delivery is driven by a *cursor*: the highest client ``seq`` this connection
has accounted for (sent, or skipped because it was for another device or a
muted topic). A live batch that does not continue the cursor means something
was missed (a full queue, a lost notification), and the writer re-reads the
gap from the database, where every message was committed before anyone was
told about it. That one rule makes the replay/live race, listener loss and
overflow all recover the same way: never a gap, never a duplicate.

Fast path: while the writer is *idle* (waiting on an empty queue, nothing in
flight), the hub writes a live batch itself, synchronously, if the socket can
take it without blocking (``Socket.write_now``): no task wake-up, no
checkpoint, in order by construction because nothing else is pending for this
connection. Whatever the kernel does not take goes to the queue as raw bytes,
ahead of anything later. This is what makes fan-out cheap (DESIGN.md: broadcast
is frame writing); the queue path stays the general one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

from domain.errors import FrameRejected, Unavailable
from domain.realtime import (PING_FRAME, Ack, Claims, Message, Pong, Subscribe, Unsubscribe, error_frame,
                             parse_client_frame, visible, welcome_frame)
from storage import realtime as store
from telemetry import metrics

log = logging.getLogger("paycast.realtime")

# Messages read from the database per round trip while catching up.
REPLAY_PAGE = 500
# Invalid frames a client may send per minute before it is disconnected (1008).
MAX_INVALID_PER_MINUTE = 60
# Topics one connection may have unsubscribed from (bounds its memory).
MAX_MUTED_TOPICS = 1000
# Most queued items / bytes put into one write: frames a connection has ready go
# out together (one socket write instead of one per frame), within this bound
# so one connection's burst does not hold the loop for long.
MAX_COALESCE = 64
MAX_WRITE_BYTES = 256 * 1024
# After asking to close, how long the close frame may take before the
# connection is dropped without one.
CLOSE_TIMEOUT_S = 10.0
# Wait after a failed database read before trying again.
RETRY_S = 1.0

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013


class Socket(Protocol):
    """What the actor needs of a WebSocket (``app.realtime_socket.QuartSocket``)."""

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

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True)
class Raw:
    """Encoded frames a direct write left over; they go out before anything queued later."""

    data: bytes


# Queued to wake an idle writer (close or catch-up requested).
_WAKE = object()


@dataclass(frozen=True)
class Batch:
    """Messages ``first``..``last`` of one client, committed in one transaction."""

    first: int
    last: int
    messages: tuple[Message, ...]


class Connection:
    """One client's WebSocket.

    Args:
      connection_id: ``conn_...``, also in the welcome frame and task names.
      claims: the verified token.
      db: the database (for replay and topic ownership).
      settings: queue size, slow-consumer grace, frame limit.
      on_slow: called once when this connection is closed as a slow consumer.
    """

    def __init__(self, connection_id: str, claims: Claims, db, settings, *, on_slow=lambda: None) -> None:
        self.id = connection_id
        self.merchant_id = claims.merchant_id
        self.client_id = claims.client_id
        self.device_id = claims.device_id
        self.key = (claims.merchant_id, claims.client_id)
        self._ws: Socket | None = None
        self._db = db
        self._capacity = settings.realtime_queue_size
        self._slow_s = settings.realtime_slow_consumer_s
        self._max_frame = settings.realtime_max_frame_bytes
        self._on_slow = on_slow
        self._send_q, self._recv_q = trio.open_memory_channel[Batch | Raw | str](self._capacity)
        self.cursor = 0
        self.muted: set[str] = set()
        # A live batch was not queued (full queue, or a replay in progress): re-read from the database.
        self.lagging = False
        self.replaying = False
        self.pressure_since: float | None = None
        self.closing: tuple[int, str] | None = None
        self.closing_since: float | None = None
        now = trio.current_time()
        self.last_heard = now
        self.last_ping = now
        self.send_started: float | None = None
        self.sent = 0
        self.acked = 0
        self._invalid = 0
        self._invalid_window = now
        self._wait_scope: trio.CancelScope | None = None
        self._scope: trio.CancelScope | None = None
        # True only while the writer waits on an empty queue with nothing in
        # flight: then the hub may write to the socket directly.
        self._idle = False
        self._write_now = None
        self.direct_writes = 0

    # ------------------------------------------------------------ called by the hub (never block)

    def offer(self, batch: Batch) -> None:
        """Deliver a live batch: written at once if the writer is idle, else
        queued; if it cannot be queued it is re-read from the database later."""
        if self.closing is not None or batch.last <= self.cursor:
            return
        if self.replaying:
            self.lagging = True  # the replay in progress reads it from the database
            return
        if self._idle and batch.first == self.cursor + 1 and not self.lagging:
            frames = [m.frame for m in batch.messages
                      if m.seq > self.cursor and visible(self.device_id, self.muted, m.device_id, m.topic)]
            if not frames:
                self.cursor = batch.last
                return
            if self._direct(frames):
                self.cursor = batch.last
                return
        self._enqueue(batch, lag=True)

    def offer_frame(self, text: str) -> None:
        """Deliver a control frame (ping, error); a full queue counts as pressure."""
        if self.closing is not None:
            return
        if self._idle and self._direct([text]):
            return
        self._enqueue(text, lag=False)

    def _direct(self, frames: list[str]) -> bool:
        """Write ``frames`` now from the caller's task; False if the socket said not now."""
        rest = self._write_now(frames) if self._write_now is not None else None
        if rest is None:
            return False
        self.sent += len(frames)
        metrics.REALTIME_MESSAGES.inc(len(frames))
        self.direct_writes += 1
        if rest:  # the kernel buffer filled up: the writer finishes it, before anything later
            self._enqueue(Raw(rest), lag=False)
        return True

    def _enqueue(self, item, *, lag: bool) -> None:
        self._idle = False  # the writer has work (it may not have run yet): no direct writes
        try:
            self._send_q.send_nowait(item)
        except trio.WouldBlock:
            if lag:
                self.lagging = True  # in the database; re-read once the queue drains
            self._under_pressure()

    def _wake(self) -> None:
        if self._idle:
            self._enqueue(_WAKE, lag=False)
        elif self._wait_scope is not None:
            self._wait_scope.cancel()

    def catch_up(self) -> None:
        """Re-read from the database from the cursor on (after a lost notification)."""
        self.lagging = True
        self._wake()

    def request_close(self, code: int, reason: str) -> None:
        """Ask the writer to send a close frame and stop (first request wins)."""
        if self.closing is None:
            self.closing = (code, reason)
            self.closing_since = trio.current_time()
            self._wake()

    def abort(self) -> None:
        """Stop both tasks now, without a close frame (a socket that no longer drains)."""
        if self._scope is not None:
            self._scope.cancel()

    def queued(self) -> int:
        return self._send_q.statistics().current_buffer_used

    def check(self, now: float, ping_s: float, idle_s: float) -> None:
        """The heartbeat's visit: ping, idle timeout, slow consumer, stuck close."""
        if self.closing is not None:
            if self.closing_since is not None and now - self.closing_since > CLOSE_TIMEOUT_S:
                self.abort()
            return
        if self.send_started is not None and now - self.send_started > idle_s:
            log.warning("connection %s: a send has been stuck for %.0fs; dropping it", self.id, idle_s)
            self.abort()
            return
        if now - self.last_heard > idle_s:
            self.request_close(CLOSE_GOING_AWAY, "idle timeout")
            return
        if self.pressure_since is not None:
            if self.queued() <= self._capacity // 2:
                self.pressure_since = None
            else:
                self._check_slow(now)
        if now - self.last_ping >= ping_s:
            self.last_ping = now
            self.offer_frame(PING_FRAME)

    def _under_pressure(self) -> None:
        now = trio.current_time()
        if self.pressure_since is None:
            self.pressure_since = now
        self._check_slow(now)

    def _check_slow(self, now: float) -> None:
        if self.pressure_since is not None and now - self.pressure_since >= self._slow_s and self.closing is None:
            self.request_close(CLOSE_TRY_AGAIN_LATER, "slow consumer: outgoing queue full; reconnect with after_seq")
            self._on_slow()

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
        if after_seq is not None:
            self.cursor = after_seq
            self.lagging = True
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._read, name=f"actor:connection:{self.id}:recv")
            nursery.start_soon(self._write, nursery.cancel_scope, name=f"actor:connection:{self.id}")

    async def _send(self, texts: list[str]) -> None:
        self.send_started = trio.current_time()
        await self._ws.send_many(texts)
        self.send_started = None
        self.sent += len(texts)
        metrics.REALTIME_MESSAGES.inc(len(texts))

    async def _send_bytes(self, data: bytes) -> None:
        self.send_started = trio.current_time()
        await self._ws.send_raw(data)
        self.send_started = None

    async def _send_chunked(self, texts: list[str]) -> None:
        """Send ``texts`` in writes of at most :data:`MAX_WRITE_BYTES`."""
        chunk: list[str] = []
        size = 0
        for text in texts:
            if chunk and size + len(text) > MAX_WRITE_BYTES:
                await self._send(chunk)
                chunk, size = [], 0
            chunk.append(text)
            size += len(text)
        if chunk:
            await self._send(chunk)

    async def _write(self, stop: trio.CancelScope) -> None:
        try:
            await self._send([welcome_frame(self.id, self.client_id, self.device_id)])
            while self.closing is None:
                if self.lagging:
                    await self._catch_up()
                    continue
                # Idle only with nothing queued: every enqueue clears it again.
                self._idle = self.queued() == 0
                item = await self._recv_q.receive()
                self._idle = False
                items = [item]
                while len(items) < MAX_COALESCE:
                    try:
                        items.append(self._recv_q.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self.pressure_since is not None and self.queued() <= self._capacity // 2:
                    self.pressure_since = None
                frames: list[str] = []
                for item in items:
                    if isinstance(item, Raw):
                        if frames:  # keep the order: what was queued before goes first
                            await self._send_chunked(frames)
                            frames = []
                        await self._send_bytes(item.data)
                    elif isinstance(item, Batch):
                        self._take(item, frames)
                    elif item is not _WAKE:
                        frames.append(item)
                if frames:
                    await self._send_chunked(frames)
            code, reason = self.closing
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._ws.close(code, reason)
        finally:
            stop.cancel()

    def _take(self, batch: Batch, frames: list[str]) -> None:
        """Add the batch's frames for this connection to ``frames``; move the cursor."""
        if batch.last <= self.cursor:
            return  # already replayed from the database
        if batch.first > self.cursor + 1 or self.lagging:
            # Something before it was missed: the database has both, and the
            # catch-up that follows reads from the cursor on.
            self.lagging = True
            return
        for message in batch.messages:
            if message.seq <= self.cursor:
                continue
            if visible(self.device_id, self.muted, message.device_id, message.topic):
                frames.append(message.frame)
            self.cursor = message.seq

    async def _catch_up(self) -> None:
        """Send everything after the cursor from the database, page by page."""
        self.replaying = True
        try:
            while self.closing is None:
                self.lagging = False
                try:
                    page = await self._db.transaction(store.read_after, self.merchant_id, self.client_id,
                                                      self.cursor, REPLAY_PAGE)
                except Unavailable:
                    self.lagging = True
                    with trio.CancelScope() as self._wait_scope:
                        await trio.sleep(RETRY_S)
                    self._wait_scope = None
                    return
                frames: list[str] = []
                if page and page[0].seq > self.cursor + 1:
                    frames.append(error_frame(
                        "replay_truncated",
                        f"Messages {self.cursor + 1}..{page[0].seq - 1} are no longer stored.",
                    ))
                for message in page:
                    if visible(self.device_id, self.muted, message.device_id, message.topic):
                        frames.append(message.frame)
                    self.cursor = message.seq
                if frames:
                    await self._send_chunked(frames)
                # No await between this check and clearing ``replaying``: a batch
                # offered meanwhile sets ``lagging`` and is read on the next round.
                if len(page) < REPLAY_PAGE and not self.lagging:
                    return
        finally:
            self.replaying = False

    async def _read(self) -> None:
        while True:
            raw = await self._ws.receive()
            now = trio.current_time()
            self.last_heard = now
            try:
                frame = parse_client_frame(raw, self._max_frame)
            except FrameRejected as exc:
                if now - self._invalid_window > 60:
                    self._invalid_window, self._invalid = now, 0
                self._invalid += 1
                if self._invalid > MAX_INVALID_PER_MINUTE:
                    self.request_close(CLOSE_POLICY, "too many invalid frames")
                    return
                self.offer_frame(error_frame(exc.code, exc.message))
                continue
            if isinstance(frame, Subscribe):
                await self._subscribe(frame.topic)
            elif isinstance(frame, Unsubscribe):
                if len(self.muted) >= MAX_MUTED_TOPICS:
                    self.offer_frame(error_frame("too_many_topics", "Too many unsubscribed topics."))
                else:
                    self.muted.add(frame.topic)
            elif isinstance(frame, Ack):
                self.acked = max(self.acked, frame.seq)
            elif isinstance(frame, Pong):
                pass  # last_heard is all a pong is for

    async def _subscribe(self, topic: str) -> None:
        try:
            owned = await self._db.transaction(store.owns_topic, self.merchant_id, self.client_id, topic)
        except Unavailable:
            self.offer_frame(error_frame("unavailable", "Could not check the topic now; retry shortly."))
            return
        if owned:
            self.muted.discard(topic)
        else:
            self.offer_frame(error_frame("topic_forbidden", f"{topic} is not one of this client's topics."))
