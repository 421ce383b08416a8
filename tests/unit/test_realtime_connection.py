"""The connection actor against an in-memory log and socket: the replay/live
race, gap detection, a full queue and a slow consumer, made deterministic by
gating the database read and the socket."""

from __future__ import annotations

import json
from types import SimpleNamespace

import trio

from actors.realtime.connection import Batch, Connection
from domain.realtime import Claims, Message, event_frame
from storage import realtime as store


class FakeLog:
    """One client's messages; ``read_gate`` holds replay reads until set."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.read_gate: trio.Event | None = None
        self.reads = 0

    def add(self, n: int = 1, device: str | None = None, topic: str = "client:c") -> Batch:
        first = len(self.messages) + 1
        new = [Message(s, topic, device, event_frame(s, topic, {"n": s})) for s in range(first, first + n)]
        self.messages += new
        return Batch(first, first + n - 1, tuple(new))

    async def transaction(self, fn, *args):
        if fn is store.read_after:
            _merchant, _client, after, limit = args
            self.reads += 1
            if self.read_gate is not None:
                await self.read_gate.wait()
            await trio.sleep(0)
            return [m for m in self.messages if m.seq > after][:limit]
        if fn is store.owns_topic:
            return True
        raise AssertionError(fn)


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.send_gate: trio.Event | None = None
        self.closed: tuple[int, str] | None = None
        self.incoming_send, self.incoming = trio.open_memory_channel(10)

    async def send_many(self, texts: list[str]) -> None:
        if self.send_gate is not None:
            await self.send_gate.wait()
        await trio.sleep(0)
        self.frames += [json.loads(t) for t in texts]

    async def receive(self):
        return await self.incoming.receive()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "event"]


def _conn(log, *, queue=4, slow_s=60.0, device=None) -> Connection:
    settings = SimpleNamespace(realtime_queue_size=queue, realtime_slow_consumer_s=slow_s,
                               realtime_max_frame_bytes=4096)
    return Connection("conn_test", Claims("mer_1", "c", device, 0), log, settings)


async def _until(predicate, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)


async def test_live_batches_during_replay_are_delivered_once_in_order():
    log, ws = FakeLog(), FakeSocket()
    for _ in range(5):
        log.add()
    log.read_gate = trio.Event()
    conn = _conn(log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, 0)
        await _until(lambda: log.reads == 1)  # the replay read is in flight
        assert [f["type"] for f in ws.frames] == ["welcome"]  # welcome first, before any replay
        live = [log.add(), log.add(2)]  # committed and notified during the replay
        for batch in live:
            conn.offer(batch)
        log.read_gate.set()
        await _until(lambda: ws.seqs()[-1:] == [8])
        conn.offer(live[1])  # a late duplicate
        conn.offer(log.add())  # and live again
        await _until(lambda: ws.seqs()[-1:] == [9])
        conn.request_close(1000, "done")
    assert ws.seqs() == list(range(1, 10))
    assert ws.closed == (1000, "done")


async def test_a_batch_that_skips_seqs_makes_the_connection_read_the_gap():
    log, ws = FakeLog(), FakeSocket()
    conn = _conn(log)
    conn.cursor = 3  # live only, from seq 3
    for _ in range(3):
        log.add()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, None)
        log.add()  # seq 4: its notification was lost
        conn.offer(log.add())  # seq 5 arrives
        await _until(lambda: ws.seqs() == [4, 5])
        conn.request_close(1000, "done")


async def test_a_full_queue_is_recovered_from_the_database_without_loss():
    log, ws = FakeLog(), FakeSocket()
    ws.send_gate = trio.Event()  # the client is not reading for a while
    conn = _conn(log, queue=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, None)
        for _ in range(20):
            conn.offer(log.add())
        assert conn.lagging and conn.pressure_since is not None and conn.closing is None
        ws.send_gate.set()
        await _until(lambda: ws.seqs()[-1:] == [20])
        assert conn.pressure_since is None  # drained
        conn.request_close(1000, "done")
    assert ws.seqs() == list(range(1, 21))


async def test_a_queue_that_stays_full_closes_the_connection_with_1013():
    slow = []
    log, ws = FakeLog(), FakeSocket()
    ws.send_gate = trio.Event()
    conn = _conn(log, queue=2, slow_s=0.0)
    conn._on_slow = lambda: slow.append(1)  # noqa: SLF001
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, None)
        for _ in range(4):
            conn.offer(log.add())
        assert conn.closing is not None and conn.closing[0] == 1013 and slow == [1]
        ws.send_gate.set()
        await _until(lambda: ws.closed is not None)
    assert ws.closed[0] == 1013


async def test_device_and_muted_topics_filter_but_the_cursor_moves_on():
    log, ws = FakeLog(), FakeSocket()
    conn = _conn(log, device="phone")
    conn.muted.add("payment:p1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, None)
        conn.offer(log.add(device="laptop"))
        conn.offer(log.add(topic="payment:p1"))
        conn.offer(log.add(device="phone"))
        conn.offer(log.add())
        await _until(lambda: conn.cursor == 4)
        await ws.incoming_send.send('{"type": "subscribe", "topic": "payment:p1"}')
        await _until(lambda: not conn.muted)
        conn.offer(log.add(topic="payment:p1"))
        await _until(lambda: conn.cursor == 5)
        conn.request_close(1000, "done")
    assert ws.seqs() == [3, 4, 5]


class DirectSocket(FakeSocket):
    """A socket with the fast path: ``room`` frames fit in the kernel buffer;
    the rest come back as leftover bytes for the writer."""

    def __init__(self, room: int = 1000) -> None:
        super().__init__()
        self.room = room
        self.direct = 0
        self.raw: list[bytes] = []

    def write_now(self, texts):
        taken, left = texts[:self.room], texts[self.room:]
        self.room -= len(taken)
        self.direct += len(taken)
        self.frames += [json.loads(t) for t in taken]
        return "\n".join(left).encode()

    async def send_raw(self, data: bytes) -> None:
        await trio.sleep(0)
        self.frames += [json.loads(t) for t in data.decode().split("\n")]


async def test_an_idle_connection_is_written_directly_and_leftovers_keep_their_order():
    log, ws = FakeLog(), DirectSocket(room=3)
    conn = _conn(log, queue=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run, ws, None)
        await _until(lambda: conn._idle)  # noqa: SLF001 - welcome sent, waiting
        conn.offer(log.add())  # written by the caller, no task switch
        assert ws.seqs() == [1] and ws.direct == 1
        conn.offer(log.add(3))  # two fit, one is left over for the writer ...
        conn.offer(log.add())  # ... so this one is queued behind it
        assert ws.seqs() == [1, 2, 3]
        await _until(lambda: ws.seqs()[-1:] == [5])
        ws.room = 10
        await _until(lambda: conn._idle)  # noqa: SLF001
        conn.offer(log.add(device="other"))  # not for this device: only the cursor moves
        conn.offer(log.add())
        assert conn.cursor == 7
        conn.request_close(1000, "done")
    assert ws.seqs() == [1, 2, 3, 4, 5, 7]
