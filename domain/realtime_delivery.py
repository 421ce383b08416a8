"""One realtime connection's delivery rules, sans I/O.

:class:`Delivery` owns what a connection knows about its stream — the cursor,
the bounded queue of what is waiting to be written, whether it lags behind the
database, back pressure, the heartbeat's clocks, the client's acks and muted
topics — and *decides*; the connection actor (``actors.realtime.connection``)
only carries the decisions out, the way hypercorn's protocol classes drive
h11/wsproto: feed an input, get back what to do.

The one rule that makes every race recover the same way: the *cursor* is the
highest client ``seq`` accounted for (sent, or skipped because it was for
another device or a muted topic). A live batch that does not continue the
cursor means something was missed (full queue, lost notification, a replay in
flight), and the connection re-reads from the cursor on from the database,
where every message was committed before anyone was told about it. Never a
gap, never a duplicate.

Inputs and the decisions they return:

- hub side (never blocks): :meth:`Delivery.offer`, :meth:`Delivery.offer_frame`,
  :meth:`Delivery.catch_up`, :meth:`Delivery.request_close`,
  :meth:`Delivery.tick` → ``None`` | :data:`WAKE` | :class:`WriteNow` |
  :data:`SLOW` | :data:`ABORT`;
- writer side: :meth:`Delivery.next_step` → :class:`Send` | :class:`ReadLog` |
  :class:`CloseSocket` | :class:`Wait`; then :meth:`Delivery.replayed` /
  :meth:`Delivery.read_failed` / :meth:`Delivery.written_now`;
- reader side: :meth:`Delivery.received` → ``None`` | :class:`Reply` |
  :class:`CheckTopic` | :class:`Acked` | :data:`WAKE` (closing, 1008).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import FrameRejected
from domain.realtime import (PING_FRAME, Ack, Message, Pong, Subscribe, Unsubscribe, error_frame,
                             parse_client_frame, visible)

# Messages read from the database per round trip while catching up.
REPLAY_PAGE = 500
# Invalid frames a client may send per minute before it is disconnected (1008).
MAX_INVALID_PER_MINUTE = 60
# Topics one connection may have unsubscribed from (bounds its memory).
MAX_MUTED_TOPICS = 1000
# Most queued items put into one write: frames a connection has ready go out
# together (one socket write instead of one per frame), within this bound so
# one connection's burst does not hold the loop for long.
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
# docs/api.md: a revoked device's connections are closed with 4001.
CLOSE_DEVICE_REVOKED = 4001


@dataclass(frozen=True)
class Batch:
    """Messages ``first``..``last`` of one client, committed in one transaction."""

    first: int
    last: int
    messages: tuple[Message, ...]


def gaps(routed: int | None, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Seq ranges missing between what was routed already and ``ranges`` (first, last).

    A notification can arrive after a later one (they are sent after commit,
    by whichever transaction finishes first), or not at all. Everything before
    a notified seq is committed, so the router reads a gap once for all the
    client's connections instead of each connection reading it.
    """
    if not ranges:
        return []
    ordered = sorted(ranges)
    expected = routed + 1 if routed is not None else ordered[0][0]
    out: list[tuple[int, int]] = []
    for first, last in ordered:
        if first > expected:
            out.append((expected, first - 1))
        expected = max(expected, last + 1)
    return out


def assemble(routed: int | None, messages: list[Message]) -> list[Batch]:
    """One client's messages of a routing pass as batches of consecutive seqs,
    in order, without duplicates and without what was routed before."""
    by_seq = {m.seq: m for m in messages if routed is None or m.seq > routed}
    runs: list[list[Message]] = []
    for seq in sorted(by_seq):
        if runs and runs[-1][-1].seq + 1 == seq:
            runs[-1].append(by_seq[seq])
        else:
            runs.append([by_seq[seq]])
    return [Batch(run[0].seq, run[-1].seq, tuple(run)) for run in runs]


@dataclass(frozen=True)
class Raw:
    """Encoded bytes a direct write left over; they go out before anything queued later."""

    data: bytes


# ----------------------------------------------------------------- decisions


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


WAKE = _Marker("WAKE")  # the writer waits: wake it (something was queued, a close or catch-up asked)
SLOW = _Marker("SLOW")  # closing as a slow consumer (1013); wake the writer and count it
ABORT = _Marker("ABORT")  # stop now, without a close frame (the socket no longer drains)


@dataclass(frozen=True)
class WriteNow:
    """The writer is idle: write ``frames`` from the caller if the socket can take
    them without blocking, then report with :meth:`Delivery.written_now`."""

    frames: list[str]
    item: Batch | str


@dataclass(frozen=True)
class Send:
    """Write these parts in order: a list of text frames, or raw leftover bytes."""

    parts: tuple[list[str] | bytes, ...]


@dataclass(frozen=True)
class ReadLog:
    """Read up to ``limit`` messages after ``after_seq`` and give them to :meth:`Delivery.replayed`."""

    after_seq: int
    limit: int


@dataclass(frozen=True)
class CloseSocket:
    code: int
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing to write: wait for a wake-up, or until ``until`` (a retry) if set."""

    until: float | None


@dataclass(frozen=True)
class Reply:
    """Send this control frame back (an ``error`` frame); offer it with :meth:`Delivery.offer_frame`."""

    frame: str


@dataclass(frozen=True)
class CheckTopic:
    """Ask the database whether ``topic`` is the client's; report with :meth:`Delivery.topic_checked`."""

    topic: str


@dataclass(frozen=True)
class Acked:
    """The client acknowledged up to ``seq`` (higher than before): persist it for the device."""

    seq: int


Offered = None | _Marker | WriteNow


class Delivery:
    """The delivery state of one connection.

    Args:
      device_id: the token's device (messages for another device are skipped).
      capacity: most items waiting to be written before the connection lags.
      slow_s: how long the queue may stay full before closing with 1013.
      max_frame: the largest client frame accepted.
      now: the current monotonic time.
      ping_head_start: how much earlier than a full interval after ``now``
        the first ping is due (the caller spreads it, e.g. at random over half
        the interval).
    """

    # One per connection, tens of thousands per process: no per-instance dict.
    __slots__ = ("device_id", "capacity", "slow_s", "max_frame", "cursor", "muted", "queue", "lagging",
                 "replaying", "retry_at", "pressure_since", "closing", "closing_since", "last_heard", "last_ping",
                 "send_started", "acked", "_invalid", "_invalid_window", "waiting", "sent", "direct_writes")

    def __init__(self, device_id: str | None, *, capacity: int, slow_s: float, max_frame: int,
                 now: float, ping_head_start: float = 0.0) -> None:
        self.device_id = device_id
        self.capacity = capacity
        self.slow_s = slow_s
        self.max_frame = max_frame
        self.cursor = 0
        self.muted: set[str] = set()
        # A list, not a deque: an empty deque costs ~600 bytes per connection,
        # and items leave in slices of up to MAX_COALESCE anyway.
        self.queue: list[Batch | Raw | str] = []
        # Something committed is not in the queue: re-read from the cursor on.
        self.lagging = False
        self.replaying = False
        self.retry_at: float | None = None
        self.pressure_since: float | None = None
        self.closing: tuple[int, str] | None = None
        self.closing_since: float | None = None
        self.last_heard = now
        # The first ping comes ``ping_head_start`` early: connections opened in
        # one burst (a restart, a reconnect storm) would otherwise be pinged,
        # and answer, in one burst every interval, which stalls everything
        # else the process does for that moment.
        self.last_ping = now - ping_head_start
        self.send_started: float | None = None
        self.acked = 0
        self._invalid = 0
        self._invalid_window = now
        # True only while the writer waits with nothing queued or in flight:
        # then the hub may write to the socket directly (no task wake-up).
        self.waiting = False
        self.sent = 0
        self.direct_writes = 0

    def start(self, after_seq: int | None, latest: int | None = None) -> None:
        """Set the starting point: replay after ``after_seq``, or live from ``latest``."""
        if after_seq is not None:
            self.cursor = after_seq
            self.lagging = True
        elif latest is not None:
            self.cursor = latest

    # ------------------------------------------------------------ hub side (never blocks)

    def offer(self, batch: Batch, now: float) -> Offered:
        """A live batch of this client was committed."""
        if self.closing is not None or batch.last <= self.cursor:
            return None
        if self.replaying:
            self.lagging = True  # the read in flight may not include it: read again after
            return None
        if self.waiting and not self.lagging and batch.first == self.cursor + 1:
            frames = self._frames(batch)
            if not frames:
                self.cursor = batch.last
                return None
            self.waiting = False  # until written_now: nothing else may overtake it
            return WriteNow(frames, batch)
        return self._enqueue(batch, now, lag=True)

    def offer_frame(self, text: str, now: float) -> Offered:
        """A control frame (ping, error) to send; a full queue counts as pressure."""
        if self.closing is not None:
            return None
        if self.waiting:
            self.waiting = False  # until written_now
            return WriteNow([text], text)
        return self._enqueue(text, now, lag=False)

    def written_now(self, decision: WriteNow, rest: bytes | None, now: float) -> Offered:
        """What a direct write did: ``None`` nothing (queue it), else the bytes the
        kernel did not take (``b""``: all went out). Call it before anything else
        is offered: the writer is still waiting."""
        self.waiting = True
        if rest is None:
            return self._enqueue(decision.item, now, lag=isinstance(decision.item, Batch))
        self.sent += len(decision.frames)
        self.direct_writes += 1
        if isinstance(decision.item, Batch):
            self.cursor = decision.item.last
        if rest:  # the kernel buffer filled up: the writer finishes it, before anything later
            return self._enqueue(Raw(rest), now, lag=False, force=True)
        return None

    def catch_up(self) -> Offered:
        """Re-read from the database from the cursor on (after a lost notification)."""
        self.lagging = True
        self.retry_at = None
        return self._wake()

    def request_close(self, code: int, reason: str, now: float) -> Offered:
        """Send a close frame and stop (the first request wins)."""
        if self.closing is not None:
            return None
        self.closing = (code, reason)
        self.closing_since = now
        return self._wake()

    def tick(self, now: float, ping_s: float, idle_s: float) -> Offered:
        """The heartbeat's visit: stuck close or send, idle timeout, slow consumer, ping."""
        if self.closing is not None:
            if self.closing_since is not None and now - self.closing_since > CLOSE_TIMEOUT_S:
                return ABORT
            return None
        if self.send_started is not None and now - self.send_started > idle_s:
            return ABORT
        if now - self.last_heard > idle_s:
            return self.request_close(CLOSE_GOING_AWAY, "idle timeout", now)
        if self.pressure_since is not None:
            if len(self.queue) <= self.capacity // 2:
                self.pressure_since = None
            elif now - self.pressure_since >= self.slow_s:
                return self._close_slow(now)
        if now - self.last_ping >= ping_s:
            self.last_ping = now
            return self.offer_frame(PING_FRAME, now)
        return None

    def _frames(self, batch: Batch) -> list[str]:
        return [m.frame for m in batch.messages
                if m.seq > self.cursor and visible(self.device_id, self.muted, m.device_id, m.topic)]

    def _wake(self) -> Offered:
        if self.waiting:
            self.waiting = False
            return WAKE
        return None

    def _enqueue(self, item: Batch | Raw | str, now: float, *, lag: bool, force: bool = False) -> Offered:
        if len(self.queue) >= self.capacity and not force:
            if lag:
                self.lagging = True  # it is in the database; re-read once the queue drains
            if self.pressure_since is None:
                self.pressure_since = now
            if now - self.pressure_since >= self.slow_s:
                return self._close_slow(now)
            return self._wake()
        self.queue.append(item)
        return self._wake()

    def _close_slow(self, now: float) -> Offered:
        if self.closing is not None:
            return None
        self.request_close(CLOSE_TRY_AGAIN_LATER, "slow consumer: outgoing queue full; reconnect with after_seq", now)
        self.waiting = False
        return SLOW

    # ------------------------------------------------------------ writer side

    def next_step(self, now: float) -> Send | ReadLog | CloseSocket | Wait:
        """What the writer does next."""
        self.waiting = False
        if self.closing is not None:
            return CloseSocket(*self.closing)
        if self.queue:
            parts = self._take()
            if self.pressure_since is not None and len(self.queue) <= self.capacity // 2:
                self.pressure_since = None
            if parts:
                return Send(tuple(parts))
        if self.lagging:
            if self.retry_at is not None and now < self.retry_at:
                self.waiting = True
                return Wait(self.retry_at)
            self.lagging = False
            self.retry_at = None
            self.replaying = True
            return ReadLog(self.cursor, REPLAY_PAGE)
        self.waiting = True
        return Wait(None)

    def _take(self) -> list[list[str] | bytes]:
        parts: list[list[str] | bytes] = []
        frames: list[str] = []
        size = 0
        items = self.queue[:MAX_COALESCE]
        del self.queue[:MAX_COALESCE]
        for item in items:
            if isinstance(item, Raw):
                if frames:  # keep the order: what was queued before goes first
                    parts.append(frames)
                    frames, size = [], 0
                parts.append(item.data)
                continue
            if isinstance(item, Batch):
                new = self._take_batch(item)
            else:
                new = [item]
            for text in new:
                if frames and size + len(text) > MAX_WRITE_BYTES:
                    parts.append(frames)
                    frames, size = [], 0
                frames.append(text)
                size += len(text)
        if frames:
            parts.append(frames)
        return parts

    def _take_batch(self, batch: Batch) -> list[str]:
        if batch.last <= self.cursor:
            return []  # already replayed from the database
        if batch.first > self.cursor + 1 or self.lagging:
            # Something before it was missed: the database has both, and the
            # read that follows starts at the cursor.
            self.lagging = True
            return []
        frames = self._frames(batch)
        self.cursor = batch.last
        return frames

    def replayed(self, page: list[Message], limit: int = REPLAY_PAGE) -> list[str]:
        """A page read for :class:`ReadLog` came back: the frames to send, in order."""
        self.replaying = False
        frames: list[str] = []
        if page and page[0].seq > self.cursor + 1:
            frames.append(error_frame("replay_truncated",
                                      f"Messages {self.cursor + 1}..{page[0].seq - 1} are no longer stored."))
        for message in page:
            if message.seq <= self.cursor:
                continue
            if visible(self.device_id, self.muted, message.device_id, message.topic):
                frames.append(message.frame)
            self.cursor = message.seq
        if len(page) >= limit:
            self.lagging = True  # more to read
        return frames

    def read_failed(self, now: float) -> None:
        """The read for :class:`ReadLog` failed (database unavailable): retry later."""
        self.replaying = False
        self.lagging = True
        self.retry_at = now + RETRY_S

    def send_began(self, now: float) -> None:
        self.send_started = now

    def send_ended(self, frames: int) -> None:
        self.send_started = None
        self.sent += frames

    # ------------------------------------------------------------ reader side

    def received(self, raw: str | bytes, now: float) -> None | Reply | CheckTopic | Acked | _Marker:
        """A frame from the client."""
        self.last_heard = now
        try:
            frame = parse_client_frame(raw, self.max_frame)
        except FrameRejected as exc:
            if now - self._invalid_window > 60:
                self._invalid_window, self._invalid = now, 0
            self._invalid += 1
            if self._invalid > MAX_INVALID_PER_MINUTE:
                return self.request_close(CLOSE_POLICY, "too many invalid frames", now) or None
            return Reply(error_frame(exc.code, exc.message))
        if isinstance(frame, Subscribe):
            return CheckTopic(frame.topic)
        if isinstance(frame, Unsubscribe):
            if len(self.muted) >= MAX_MUTED_TOPICS and frame.topic not in self.muted:
                return Reply(error_frame("too_many_topics", "Too many unsubscribed topics."))
            self.muted.add(frame.topic)
            return None
        if isinstance(frame, Ack):
            # Nobody acknowledges what was not sent: an ack beyond the cursor counts up to it.
            seq = min(frame.seq, self.cursor)
            if seq > self.acked:
                self.acked = seq
                return Acked(seq)
            return None
        assert isinstance(frame, Pong)  # last_heard is all a pong is for
        return None

    def topic_checked(self, topic: str, owned: bool | None) -> Reply | None:
        """The answer to :class:`CheckTopic` (``None``: the database could not say)."""
        if owned is None:
            return Reply(error_frame("unavailable", "Could not check the topic now; retry shortly."))
        if not owned:
            return Reply(error_frame("topic_forbidden", f"{topic} is not one of this client's topics."))
        self.muted.discard(topic)
        return None
