"""The realtime hub (actors/realtime/hub.py) in process: real connection actors
(actors/realtime/connection.py) on in-memory sockets, messages stored in the real
PostgreSQL, notifications handed to the hub the way the LISTEN feed hands them.

Driven as trio tests its primitives: the hub and the connections run in a
nursery, the test gives the hub notifications, lets every task run until it
blocks (``wait_all_tasks_blocked``) and reads what each socket was sent. Where
the hub reads the database (a notification too large to carry its messages, a
lost one), the test waits for the frames instead: a task waiting for the
database thread counts as blocked to trio.
"""

from __future__ import annotations

import json
import types

import pytest
import trio
import trio.testing

from actors.realtime.connection import Connection
from actors.realtime.hub import Hub
from domain.realtime import Claims, Message, encode_notice, event_frame
from domain.realtime_delivery import CLOSE_TRY_AGAIN_LATER
from storage import merchants
from storage import realtime as store
from storage.database import Database

pytestmark = pytest.mark.timeout(60)

SETTINGS = types.SimpleNamespace(realtime_queue_size=256, realtime_slow_consumer_s=5.0, realtime_ping_s=20.0,
                                 realtime_idle_timeout_s=60.0, realtime_max_frame_bytes=4096)


@pytest.fixture
async def merchant_id(db) -> str:
    merchant, _ = await db.transaction(merchants.create, "hub")
    return merchant["id"]


class Socket:
    """An in-memory WebSocket. A draining one takes every write at once (also the
    hub's direct ``write_now``); a stuck one takes nothing until :attr:`release` is set."""

    def __init__(self, *, drains: bool = True) -> None:
        self.drains = drains
        self.release = trio.Event()
        self.frames: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def send_many(self, texts: list[str]) -> None:
        if not self.drains:
            await self.release.wait()
        self.frames += [json.loads(t) for t in texts]

    def write_now(self, texts: list[str]) -> bytes | None:
        if not self.drains:
            return None
        self.frames += [json.loads(t) for t in texts]
        return b""

    async def send_raw(self, data: bytes) -> None:
        raise AssertionError("write_now never leaves bytes over here")

    async def receive(self) -> str:
        await trio.sleep_forever()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "event"]


class Feed:
    """What the LISTEN feed gives the hub: payloads waiting, taken all at once."""

    def __init__(self) -> None:
        self.waiting: list[str] = []

    def take(self) -> list[str]:
        taken, self.waiting = self.waiting, []
        return taken

    def missed(self) -> bool:
        return False


def connect(nursery: trio.Nursery, hub: Hub, db: Database, merchant_id: str, client_id: str,
            device_id: str | None = None, settings=SETTINGS, **socket) -> tuple[Connection, Socket]:
    """A connection actor of ``client_id`` on a new in-memory socket, registered with the hub, live (no replay)."""
    claims = Claims(merchant_id, client_id, device_id, expires_at=2**31)
    conn = Connection(f"conn_{client_id}_{device_id}_{len(hub)}", claims, db, settings,
                      on_slow=hub.slow_consumer_closed)
    ws = Socket(**socket)
    hub.add(conn)
    nursery.start_soon(conn.run, ws, None)
    return conn, ws


async def append(db: Database, merchant_id: str, client_id: str, *items: tuple[str | None, object]) -> list[Message]:
    """Store messages ``(device_id, data)`` for a client, as the product does; the stored messages."""
    return await db.transaction(store.append_messages, merchant_id, client_id,
                                [(f"client:{client_id}", device, {"data": data}) for device, data in items])


async def until(predicate, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_one_notification_fans_out_to_every_connection_of_its_client(db, merchant_id):
    feed = Feed()
    hub = Hub(db, SETTINGS, feed=feed)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        _, anywhere = connect(nursery, hub, db, merchant_id, "cus_1")
        _, phone = connect(nursery, hub, db, merchant_id, "cus_1", "phone")
        _, tablet = connect(nursery, hub, db, merchant_id, "cus_1", "tablet", drains=False)
        _, other = connect(nursery, hub, db, merchant_id, "cus_2")
        tablet.release.set()  # queued, not written directly: the connection's writer sends it
        messages = await append(db, merchant_id, "cus_1", (None, "all"), ("phone", "phone only"), (None, "all again"))
        await trio.testing.wait_all_tasks_blocked()
        assert [f["type"] for f in anywhere.frames] == ["welcome"]
        feed.waiting.append(encode_notice(merchant_id, "cus_1", messages))
        hub.wake()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert hub.notices == 1
    assert hub.fetched == 0  # the messages travelled in the notification: no read
    # A message for one device reaches only that device's connections.
    assert anywhere.seqs() == [1, 3]
    assert phone.seqs() == [1, 2, 3]
    assert tablet.seqs() == [1, 3]
    assert [f["event"]["data"] for f in tablet.frames[1:]] == ["all", "all again"]
    assert other.seqs() == []  # another client's connection gets nothing
    assert [f["type"] for f in other.frames] == ["welcome"]


async def test_messages_not_carried_or_lost_are_read_once_for_all_connections(db, merchant_id):
    """A notification too large to carry its messages, and a gap before a later
    one (a notification lost between commit and send): the hub reads both from
    the database in one query and every connection gets every seq, in order."""
    feed = Feed()
    hub = Hub(db, SETTINGS, feed=feed)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sockets = [connect(nursery, hub, db, merchant_id, "cus_1")[1] for _ in range(3)]
        first = await append(db, merchant_id, "cus_1", (None, 1))
        feed.waiting.append(encode_notice(merchant_id, "cus_1", first))
        hub.wake()
        await until(lambda: all(ws.seqs() == [1] for ws in sockets))
        big = await append(db, merchant_id, "cus_1", (None, "x" * 5000), (None, "y" * 5000))  # seqs 2-3
        lost = await append(db, merchant_id, "cus_1", (None, 4))
        later = await append(db, merchant_id, "cus_1", (None, 5))
        assert json.loads(encode_notice(merchant_id, "cus_1", big)).keys() == {"m", "c", "f", "l"}  # header only
        del lost  # its notification never comes
        feed.waiting += [encode_notice(merchant_id, "cus_1", big), encode_notice(merchant_id, "cus_1", later)]
        hub.wake()
        await until(lambda: all(ws.seqs() == [1, 2, 3, 4, 5] for ws in sockets))
        nursery.cancel_scope.cancel()
    assert hub.notices == 3
    assert hub.fetched == 2  # two ranges read (2-3 not carried, 4 lost), in one routing pass
    assert [f["event"]["data"] for f in sockets[0].frames if f["type"] == "event"] == [
        1, "x" * 5000, "y" * 5000, 4, 5]


async def test_a_slow_consumer_is_closed_1013_without_holding_back_the_others(db, merchant_id):
    settings = types.SimpleNamespace(**{**vars(SETTINGS), "realtime_queue_size": 2, "realtime_slow_consumer_s": 0})
    hub = Hub(db, settings)
    async with trio.open_nursery() as nursery:
        slow_conn, slow = connect(nursery, hub, db, merchant_id, "cus_1", settings=settings, drains=False)
        _, fast = connect(nursery, hub, db, merchant_id, "cus_1", settings=settings)
        await trio.testing.wait_all_tasks_blocked()  # the slow socket holds its welcome frame
        for seq in range(1, 6):  # one routing pass each: one queued batch each
            message = Message(seq, "client:cus_1", None, event_frame(seq, "client:cus_1", {"data": seq}))
            await hub.route([encode_notice(merchant_id, "cus_1", [message])])
        await trio.testing.wait_all_tasks_blocked()
        # The fast connection got everything as it came; the slow one's queue
        # (2) overflowed and, past the grace (0 s), it is closing as a slow consumer.
        assert fast.seqs() == [1, 2, 3, 4, 5]
        assert hub.slow_closes == 1
        assert slow_conn.closing[0] == CLOSE_TRY_AGAIN_LATER
        assert slow.frames == []
        slow.release.set()  # the socket drains again: the close frame goes out, nothing queued after it
        await trio.testing.wait_all_tasks_blocked()
        assert slow.closed[0] == CLOSE_TRY_AGAIN_LATER
        assert "slow consumer" in slow.closed[1]
        assert slow.seqs() == []
        assert [f["type"] for f in slow.frames] == ["welcome"]
        nursery.cancel_scope.cancel()
    assert hub.slow_closes == 1


async def test_a_resync_sends_lagging_connections_back_to_the_database(db, merchant_id):
    """After a lost LISTEN connection (the feed asks for a resync) every
    connection behind its client's latest seq re-reads from its cursor."""
    hub = Hub(db, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sockets = [connect(nursery, hub, db, merchant_id, "cus_1")[1] for _ in range(2)]
        _, other = connect(nursery, hub, db, merchant_id, "cus_2")
        await append(db, merchant_id, "cus_1", (None, 1), (None, 2))  # no notification reaches the hub
        await trio.testing.wait_all_tasks_blocked()
        assert all(ws.seqs() == [] for ws in sockets)
        hub.request_resync()
        await until(lambda: all(ws.seqs() == [1, 2] for ws in sockets))
        nursery.cancel_scope.cancel()
    assert hub.resyncs == 1
    assert other.seqs() == []
