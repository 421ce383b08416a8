"""Realtime gateway end to end: a real server process, real WebSocket clients
(trio-websocket, and a raw wsproto client for the slow consumer), real
PostgreSQL LISTEN/NOTIFY between two processes."""

from __future__ import annotations

import json
import re
import socket
import urllib.parse

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request

from tests.realtime_support import connect, events, frame, http, publish, token, welcome, ws_url
from tests.support import ADMIN_TOKEN, CARD_DECLINED, CARD_OK, ServerProcess, db_fetch, expect, run_check


@pytest.fixture(scope="module")
def server_b(db_dsn):
    """A second process on the session's database, with a small outgoing queue
    and a short slow-consumer grace so a stalled client is closed quickly."""
    proc = ServerProcess(db_dsn, PAYCAST_REALTIME_QUEUE_SIZE="8", PAYCAST_REALTIME_SLOW_CONSUMER_S="0.5",
                         PAYCAST_REALTIME_LISTENER_CHECK_S="0.5").start()
    try:
        yield proc
    finally:
        proc.stop()


async def _poll(fn, timeout: float = 10, interval: float = 0.05):
    """Await ``fn()`` until it returns something truthy (or fail after ``timeout``)."""
    with trio.fail_after(timeout):
        while True:
            value = await fn()
            if value:
                return value
            await trio.sleep(interval)


async def _barrier(ws) -> None:
    """Frames of one connection are handled in order: an invalid frame's error
    proves every frame sent before it was applied."""
    await ws.send_message("barrier")
    f = await frame(ws)
    assert f == {"type": "error", "code": "invalid_json", "message": f["message"]}, f


# --------------------------------------------------------------------------- routing


async def test_own_events_arrive_unsubscribed_in_order_and_other_clients_see_nothing(server, api_key):
    async with http(server, api_key) as api:
        tok_a, tok_b = await token(api, "cus_alice", "phone"), await token(api, "cus_bob")
        async with connect(server, tok_a) as alice, connect(server, tok_b) as bob:
            hello = await welcome(alice)
            assert hello["client_id"] == "cus_alice"
            assert hello["device_id"] == "phone"
            assert hello["connection_id"].startswith("conn_")
            assert (await welcome(bob))["device_id"] is None

            order = (await api.post("/v1/orders", json={"amount": 500, "currency": "INR",
                                                        "customer_id": "cus_alice"})).json()
            paid = (await api.post("/v1/payments", json={"amount": 500, "currency": "INR", "order_id": order["id"],
                                                         "payment_method": CARD_OK, "confirm": True})).json()
            declined = (await api.post("/v1/payments", json={"amount": 700, "currency": "INR",
                                                             "customer_id": "cus_alice",
                                                             "payment_method": CARD_DECLINED,
                                                             "confirm": True})).json()
            assert paid["status"] == "succeeded"
            assert declined["status"] == "failed"

            got = await events(alice, 5)
            assert [f["seq"] for f in got] == [1, 2, 3, 4, 5]
            assert [(f["topic"], f["event"]["type"]) for f in got] == [
                (f"payment:{paid['id']}", "payment.created"),
                (f"payment:{paid['id']}", "payment.succeeded"),
                (f"order:{order['id']}", "order.paid"),
                (f"payment:{declined['id']}", "payment.created"),
                (f"payment:{declined['id']}", "payment.failed"),
            ]
            assert got[1]["event"]["data"]["object"]["status"] == "succeeded"
            assert got[1]["event"]["object"] == "event"
            assert got[1]["event"]["id"].startswith("evt_")

            # Bob saw none of it: the first thing he gets is what is published to him.
            assert (await publish(api, "cus_bob", {"hello": "bob"}))["seq"] == 1
            first = await frame(bob)
            assert first["type"] == "event"
            assert first["seq"] == 1
            assert first["event"]["data"] == {"hello": "bob"}
            assert first["topic"] == "client:cus_bob"


async def test_device_targeted_publish_reaches_only_that_device_and_presence_follows(server, api_key):
    async with http(server, api_key) as api:
        phone_tok, laptop_tok = await token(api, "cus_dev", "phone"), await token(api, "cus_dev", "laptop")
        anywhere_tok = await token(api, "cus_dev")
        async with connect(server, phone_tok) as phone, connect(server, laptop_tok) as laptop:
            async with connect(server, anywhere_tok) as anywhere:
                for ws in (phone, laptop, anywhere):
                    await welcome(ws)
                presence = (await api.get("/v1/realtime/clients/cus_dev")).json()
                assert presence == {"client_id": "cus_dev", "devices": ["laptop", "phone"], "connections": 3}

                targeted = await publish(api, "cus_dev", "only the phone", device_id="phone")
                assert targeted == {"seq": 1, "connections": 1}
                broadcast = await publish(api, "cus_dev", "everyone", topic="news")
                assert broadcast == {"seq": 2, "connections": 3}

                assert [(f["seq"], f["event"]["data"]) for f in await events(phone, 2)] == [
                    (1, "only the phone"), (2, "everyone")]
                for ws in (laptop, anywhere):
                    (only,) = await events(ws, 1)
                    assert (only["seq"], only["topic"], only["event"]["data"]) == (2, "news", "everyone")
            # The device-less connection closed: presence drops it.
            await _poll(lambda: _presence_is(api, "cus_dev", ["laptop", "phone"], 2))
        await _poll(lambda: _presence_is(api, "cus_dev", [], 0))
        assert (await api.get("/v1/realtime/clients/cus_nobody")).json() == {
            "client_id": "cus_nobody", "devices": [], "connections": 0}


async def _presence_is(api, client_id, devices, n) -> bool:
    body = (await api.get(f"/v1/realtime/clients/{client_id}")).json()
    return body["devices"] == devices and body["connections"] == n


async def test_unsubscribe_mutes_a_topic_and_subscribe_is_limited_to_own_topics(server, api_key):
    async with http(server, api_key) as api:
        mine = (await api.post("/v1/payments", json={"amount": 100, "currency": "INR", "customer_id": "cus_sub",
                                                     "payment_method": CARD_OK})).json()
        other = (await api.post("/v1/payments", json={"amount": 100, "currency": "INR", "customer_id": "cus_else",
                                                      "payment_method": CARD_OK})).json()
        async with connect(server, await token(api, "cus_sub")) as ws:
            await welcome(ws)
            topic = f"payment:{mine['id']}"
            await ws.send_message(json.dumps({"type": "unsubscribe", "topic": topic}))
            await _barrier(ws)
            await publish(api, "cus_sub", "muted", topic=topic)  # seq 2 (seq 1 was payment.created)
            await publish(api, "cus_sub", "marker")  # seq 3
            (marker,) = await events(ws, 1)
            assert (marker["seq"], marker["event"]["data"]) == (3, "marker")

            await ws.send_message(json.dumps({"type": "subscribe", "topic": topic}))
            await _barrier(ws)
            await publish(api, "cus_sub", "heard again", topic=topic)
            (again,) = await events(ws, 1)
            assert (again["seq"], again["topic"], again["event"]["data"]) == (4, topic, "heard again")

            await ws.send_message(json.dumps({"type": "subscribe", "topic": f"payment:{other['id']}"}))
            err = await frame(ws)
            assert err["type"] == "error"
            assert err["code"] == "topic_forbidden"
            await ws.send_message(json.dumps({"type": "ack", "seq": 4}))
            await ws.send_message(json.dumps({"type": "pong"}))
            await _barrier(ws)  # acks and pongs are accepted silently


# --------------------------------------------------------------------------- resume


async def test_resume_after_disconnect_replays_exactly_what_was_missed(server, api_key):
    async with http(server, api_key) as api:
        tok = await token(api, "cus_resume")
        async with connect(server, tok) as ws:
            await welcome(ws)
            for i in range(3):
                await publish(api, "cus_resume", i)
            assert [f["seq"] for f in await events(ws, 3)] == [1, 2, 3]
        for i in range(3, 8):  # missed while disconnected
            await publish(api, "cus_resume", i)
        async with connect(server, tok, after_seq=3) as ws:
            await welcome(ws)  # first, before any replay
            replayed = await events(ws, 5)
            assert [(f["seq"], f["event"]["data"]) for f in replayed] == [(s, s - 1) for s in range(4, 9)]
            await publish(api, "cus_resume", 8)
            await publish(api, "cus_resume", 9)
            assert [f["seq"] for f in await events(ws, 2)] == [9, 10]  # live, no duplicate, no gap


async def test_replay_and_live_delivery_race_gives_no_gap_and_no_duplicate(server, api_key, db_dsn):
    """Connections resume while messages keep being published: each must see
    exactly the seqs after its ``after_seq``, in order, once."""
    total, before = 400, 250
    async with http(server, api_key) as api:
        tok = await token(api, "cus_race")
        limiter = trio.Semaphore(6)

        async def put(i: int) -> None:
            async with limiter:
                await publish(api, "cus_race", i)

        async with trio.open_nursery() as nursery:
            for i in range(before):
                nursery.start_soon(put, i)
        received: dict[int, list[int]] = {}

        async def follow(after: int, started: trio.Event) -> None:
            async with connect(server, tok, after_seq=after) as ws:
                await welcome(ws)
                started.set()
                seqs = received.setdefault(after, [])
                while not seqs or seqs[-1] < total:
                    f = await frame(ws, timeout=30)
                    assert f["type"] == "event", f
                    seqs.append(f["seq"])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                async def publish_rest() -> None:
                    async with trio.open_nursery() as inner:
                        for i in range(before, total):
                            inner.start_soon(put, i)
                            if i == before + 20:
                                # Live messages are now flowing: resume during them.
                                for after in (0, 100, before - 1, before + 10):
                                    started = trio.Event()
                                    nursery.start_soon(follow, after, started)
                                    await started.wait()

                nursery.start_soon(publish_rest)
        for after, seqs in received.items():
            assert seqs == list(range(after + 1, total + 1)), (after, _first_difference(seqs, after))
    assert len(received) == 4
    # run.py check agrees: no gap in any client's stored seqs.
    checked = await trio.to_thread.run_sync(run_check, db_dsn)
    assert checked.returncode == 0, checked.stdout


def _first_difference(seqs, after):
    for i, s in enumerate(seqs):
        if s != after + 1 + i:
            return i, s
    return None


# --------------------------------------------------------------------------- tokens and frames


async def test_bad_and_expired_tokens_are_refused_before_the_handshake(server, api_key):
    async with http(server, api_key) as api, http(server) as anon:
        expect(await anon.post("/v1/realtime/tokens", json={"client_id": "x"}), 401)
        bad = await api.post("/v1/realtime/tokens", json={"client_id": "x", "ttl_s": 0})
        expect(bad, 400)
        assert bad.json()["error"]["param"] == "ttl_s"
        assert (await api.post("/v1/realtime/tokens", json={})).json()["error"]["param"] == "client_id"
        created = await api.post("/v1/realtime/tokens", json={"client_id": "cus_tok", "ttl_s": 1})
        expect(created, 201)
        assert set(created.json()) == {"token", "expires_at"}
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", created.json()["expires_at"])
        short = created.json()["token"]
        good = await token(api, "cus_tok")

        async def refused(url: str) -> ConnectionRejected:
            with pytest.raises(ConnectionRejected) as info:
                async with connect_url(url):
                    pass
            return info.value

        base = server.url.replace("http://", "ws://") + "/v1/realtime"
        for url in (base, base + "?token=", base + "?token=garbage", base + "?token=rt1.e30.AAAA"):
            rejected = await refused(url)
            expect(rejected, 401)
            assert json.loads(rejected.body)["error"]["code"] == "invalid_token"
        head, body, mac = good.split(".")
        tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}"
        expect(await refused(ws_url(server, tampered)), 401)
        expect(await refused(ws_url(server, good) + "&after_seq=-1"), 400)

        await trio.sleep(1.1)  # the 1 s token lapses
        rejected = await refused(ws_url(server, short))
        expect(rejected, 401)
        assert json.loads(rejected.body)["error"]["code"] == "token_expired"
        async with connect(server, good) as ws:  # the server is fine
            await welcome(ws)


def connect_url(url: str):
    from trio_websocket import open_websocket_url

    return open_websocket_url(url)


async def test_garbage_frames_get_error_frames_and_the_server_keeps_serving(server, api_key):
    async with http(server, api_key) as api:
        tok = await token(api, "cus_garbage")
        async with connect(server, tok) as ws:
            await welcome(ws)
            cases = [
                ("not json", "invalid_json"),
                (b"\x00\x01binary", "binary_not_supported"),
                ("[]", "invalid_frame"),
                ('{"no": "type"}', "unknown_type"),
                ('{"type": "dance"}', "unknown_type"),
                ('{"type": "subscribe", "topic": "wallet:1"}', "invalid_topic"),
                ('{"type": "subscribe"}', "invalid_topic"),
                ('{"type": "ack", "seq": "7"}', "invalid_frame"),
                ('{"type": "ack", "seq": true}', "invalid_frame"),
                ("[" * 3000, "invalid_json"),
                ('{"type": "pong", "pad": "' + "x" * 5000 + '"}', "frame_too_large"),
            ]
            for raw, _ in cases:
                await ws.send_message(raw)
            for raw, code in cases:
                f = await frame(ws)
                assert f["type"] == "error", (raw[:20], f)
                assert f["code"] == code, (raw[:20], f)
                assert f["message"], (raw[:20], f)
            await publish(api, "cus_garbage", "still here")
            (ok,) = await events(ws, 1)
            assert ok["event"]["data"] == "still here"

        # Far over hypercorn's frame limit: it closes with 1009 (message too big)
        # without telling the app; the heartbeat's idle timeout reaps that actor.
        # Don't wait for the TCP close that follows. The close code is checked
        # outside any timeout scope, so a timeout can only fail the test.
        close_code = None
        with trio.fail_after(15):
            async with connect(server, tok) as ws:
                await welcome(ws)
                await ws.send_message("x" * 200_000)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                close_code = closed.value.reason.code
                ws._stream.socket.close()  # noqa: SLF001 - the test client leaves at once
        assert close_code == 1009
        async with connect(server, tok, after_seq=0) as ws:
            await welcome(ws)
            assert (await events(ws, 1))[0]["event"]["data"] == "still here"


# --------------------------------------------------------------------------- scale and back-pressure


async def test_500_concurrent_clients_each_get_their_own_event(server, api_key):
    n = 500
    async with http(server, api_key) as api:
        limiter = trio.Semaphore(16)
        tokens: dict[int, str] = {}

        async def issue(i: int) -> None:
            async with limiter:
                tokens[i] = await token(api, f"cus_many_{i}")

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(issue, i)

        connected = 0
        all_connected = trio.Event()
        got: dict[int, dict] = {}
        handshakes = trio.Semaphore(64)

        async def client(i: int) -> None:
            nonlocal connected
            async with handshakes:
                ws_cm = connect(server, tokens[i])
                ws = await ws_cm.__aenter__()
            try:
                await welcome(ws, timeout=30)
                connected += 1
                if connected == n:
                    all_connected.set()
                (f,) = await events(ws, 1, timeout=60)
                got[i] = f
            finally:
                await ws_cm.__aexit__(None, None, None)

        async def put(i: int) -> None:
            async with limiter:
                await publish(api, f"cus_many_{i}", {"for": i})

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(client, i)
                await all_connected.wait()
                async with trio.open_nursery() as publishers:
                    for i in range(n):
                        publishers.start_soon(put, i)
    assert len(got) == n
    assert all(f["event"]["data"] == {"for": i} and f["seq"] == 1 for i, f in got.items())


class RawClient:
    """A WebSocket client on a raw socket with a tiny receive buffer, so a
    client that stops reading fills the server's queue quickly."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.target = parts.path + "?" + parts.query
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.stream: trio.SocketStream | None = None
        self.messages = 0

    async def connect(self) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((self.host, self.port))
        self.stream = trio.SocketStream(sock)
        await self.stream.send_all(self.ws.send(Request(host=f"{self.host}:{self.port}", target=self.target)))
        with trio.fail_after(10):
            while True:
                self.ws.receive_data(await self.stream.receive_some(4096))
                if any(isinstance(e, AcceptConnection) for e in self._events()):
                    return

    def _events(self):
        for event in self.ws.events():
            if isinstance(event, Message) and event.message_finished:
                self.messages += 1
            yield event

    async def read_until_close(self, timeout: float) -> int:
        """Read everything; the close code the server sent."""
        with trio.fail_after(timeout):
            while True:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                for event in self._events():
                    if isinstance(event, CloseConnection):
                        return event.code
                if not data:
                    raise AssertionError("connection ended without a close frame")


def _slow_closes(metrics_text: str) -> float:
    match = re.search(r"^paycast_realtime_slow_consumer_closes_total (\S+)$", metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_slow_consumer_is_closed_with_1013_while_others_keep_receiving(server_b, api_key):
    async with http(server_b, api_key) as api:
        tok = await token(api, "cus_slow")
        slow = RawClient(ws_url(server_b, tok))
        await slow.connect()
        big = "x" * 64_000
        async with connect(server_b, tok) as fast:
            await welcome(fast)
            sent = 0
            seen: list[int] = []
            with trio.fail_after(60):
                # Publish until the server reports the slow close (kernel buffers
                # vary; the queue holds 8): bounded at 400 messages.
                while sent < 400:
                    for _ in range(10):
                        await publish(api, "cus_slow", big)
                        sent += 1
                    seen += [f["seq"] for f in await events(fast, sent - len(seen), timeout=30)]
                    if _slow_closes((await api.get("/metrics")).text) >= 1:
                        break
            assert _slow_closes((await api.get("/metrics")).text) >= 1, "the stalled client was never closed"
            assert seen == list(range(1, sent + 1))  # the fast client got every message, in order
            assert await slow.read_until_close(timeout=30) == 1013
            assert 0 < slow.messages < sent
            await publish(api, "cus_slow", "after")
            (after,) = await events(fast, 1)
            assert after["seq"] == sent + 1
            assert after["event"]["data"] == "after"
        # The slow client can resume from its last seq and gets the rest.
        async with connect(server_b, tok, after_seq=sent) as again:
            await welcome(again)
            assert (await events(again, 1))[0]["seq"] == sent + 1


# --------------------------------------------------------------------------- many processes


async def test_two_processes_share_tokens_presence_and_events(server, server_b, api_key):
    async with http(server, api_key) as api_a, http(server_b, api_key) as api_b:
        tok = await token(api_a, "cus_two", "tablet")  # issued by A, verified by B
        async with connect(server_b, tok) as ws:
            await welcome(ws)
            # A sees B's connection (presence is written to the database in batches).
            await _poll(lambda: _presence_is(api_a, "cus_two", ["tablet"], 1))
            pay = (await api_a.post("/v1/payments", json={"amount": 900, "currency": "INR", "customer_id": "cus_two",
                                                          "payment_method": CARD_OK, "confirm": True})).json()
            got = await events(ws, 2)
            assert [(f["seq"], f["event"]["type"]) for f in got] == [(1, "payment.created"), (2, "payment.succeeded")]
            assert got[1]["topic"] == f"payment:{pay['id']}"
            assert await publish(api_a, "cus_two", "via A") == {"seq": 3, "connections": 1}
            assert (await events(ws, 1))[0]["event"]["data"] == "via A"
        await _poll(lambda: _presence_is(api_a, "cus_two", [], 0))


async def test_lost_listen_connection_is_recovered_without_losing_messages(server, server_b, db_dsn, api_key):
    async with http(server, api_key) as api_a, http(server_b, api_key) as api_b:
        tok = await token(api_a, "cus_lost")
        async with connect(server_b, tok) as ws:
            await welcome(ws)
            await publish(api_a, "cus_lost", 0)
            assert [f["seq"] for f in await events(ws, 1)] == [1]
            killed = await trio.to_thread.run_sync(
                db_fetch, db_dsn, "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
                " WHERE application_name = 'paycast-listener' AND datname = current_database()")
            assert len(killed) >= 2  # both processes' listeners
            for i in range(1, 6):  # committed while the listeners are down or reconnecting
                await publish(api_a, "cus_lost", i)
            got = await events(ws, 5, timeout=20)
            assert [(f["seq"], f["event"]["data"]) for f in got] == [(s, s - 1) for s in range(2, 7)]

            async def listening() -> bool:
                rows = await trio.to_thread.run_sync(
                    db_fetch, db_dsn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'paycast-listener'"
                    " AND datname = current_database()")
                return len(rows) >= 2

            await _poll(listening)
            await publish(api_b, "cus_lost", 6)  # and live delivery works again
            assert (await events(ws, 1))[0]["seq"] == 7


# --------------------------------------------------------------------------- operations


async def test_actors_show_in_debug_tasks_and_metrics_count_connections(server, api_key):
    async with http(server, api_key) as api, http(server, ADMIN_TOKEN) as admin:
        async with connect(server, await token(api, "cus_ops")) as ws:
            conn_id = (await welcome(ws))["connection_id"]
            tree = (await admin.get("/debug/tasks")).text
            for name in ("actor:hub", "actor:realtime-listener", "actor:realtime-heartbeat",
                         "actor:realtime-resync", "actor:realtime-presence", f"actor:connection:{conn_id}"):
                assert name in tree, name
            metrics = (await api.get("/metrics")).text
            match = re.search(r"^paycast_realtime_connections (\S+)$", metrics, re.M)
            assert match
            assert float(match.group(1)) >= 1
            assert "paycast_realtime_slow_consumer_closes_total" in metrics


async def test_heartbeat_closes_silent_clients_and_a_draining_server_closes_the_rest(db_dsn, api_key):
    """Pings every 0.3 s, 1.5 s of silence closes (1001); a client that answers
    pings stays; SIGTERM then closes it with 1001 too."""
    proc = ServerProcess(db_dsn, PAYCAST_REALTIME_PING_S="0.3", PAYCAST_REALTIME_IDLE_TIMEOUT_S="1.5").start()
    try:
        async with http(proc, api_key) as api:
            tok = await token(api, "cus_beat")
            async with connect(proc, tok) as silent, connect(proc, tok) as alive:
                await welcome(silent)
                await welcome(alive)
                with trio.move_on_after(3):  # the live one answers every ping (frame() does)
                    await frame(alive, timeout=10)
                pings = 0
                with pytest.raises(ConnectionClosed) as closed:
                    with trio.fail_after(10):
                        while True:
                            assert json.loads(await silent.get_message()) == {"type": "ping"}
                            pings += 1
                assert closed.value.reason.code == 1001
                assert closed.value.reason.reason == "idle timeout"
                assert pings >= 2
                await publish(api, "cus_beat", "still alive")
                assert (await events(alive, 1))[0]["event"]["data"] == "still alive"

                proc.proc.send_signal(15)  # SIGTERM: drain
                with pytest.raises(ConnectionClosed) as closed:
                    with trio.fail_after(10):
                        while True:
                            await frame(alive)
                assert closed.value.reason.code == 1001
        assert await trio.to_thread.run_sync(proc.proc.wait, 15) == 0
    finally:
        proc.stop()


async def test_a_socket_hypercorn_closes_itself_ends_its_connection_actor_at_once(server, api_key):
    """A frame over hypercorn's message limit makes hypercorn send close 1009
    itself; the connection actor must go at once (not at the idle timeout)."""
    async with http(server, api_key) as api:
        tok = await token(api, "cus_too_big")
        client = RawClient(ws_url(server, tok))
        await client.connect()
        assert await _poll(lambda: _presence_is(api, "cus_too_big", [], 1))
        await client.stream.send_all(client.ws.send(Message(data="x" * 200_000)))
        assert await client.read_until_close(timeout=10) == 1009
        # The client never answers the close frame: still the server lets go.
        assert await _poll(lambda: _presence_is(api, "cus_too_big", [], 0), timeout=5)
    assert not [line for line in server.stderr_lines if "Traceback" in line], "".join(server.stderr_lines[-30:])


def _sockets(metrics_text: str, path: str) -> float:
    match = re.search(rf'^paycast_realtime_sockets_opened{{path="{path}"}} (\S+)$', metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_the_websocket_fast_path_is_taken_and_never_silently_falls_back(server, api_key):
    """Every socket must use the direct write path over hypercorn's internals; a
    hypercorn upgrade that changes them would fall back to one ASGI send per
    frame (4-10x the CPU per frame) without any functional test noticing."""
    async with http(server, api_key) as api:
        tok = await token(api, "cus_fast")
        async with connect(server, tok) as ws:
            await welcome(ws)
            await publish(api, "cus_fast", 1)
            await events(ws, 1)
        metrics = (await api.get("/metrics")).text
        assert _sockets(metrics, "fast") >= 1
        assert _sockets(metrics, "fallback") == 0, "realtime sockets fell back to the slow ASGI path"
