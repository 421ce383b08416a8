"""Realtime devices end to end: acks that last across reconnects and restarts,
the device list, and deleting a device — its connections closed with 4001 in
every process, its older tokens refused, a new token accepted. Real server
processes on the session's PostgreSQL."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from tests.realtime_support import connect, events, http, publish, token, welcome
from tests.support import ServerProcess, expect


@pytest.fixture(scope="module")
def other(db_dsn):
    """A second process on the same database."""
    proc = ServerProcess(db_dsn).start()
    try:
        yield proc
    finally:
        proc.stop()


async def _devices(api, client_id: str) -> list[dict]:
    r = await api.get(f"/v1/realtime/clients/{client_id}/devices")
    expect(r, 200)
    body = r.json()
    assert body["object"] == "list"
    assert body["has_more"] is False
    return body["data"]


async def _until(fn, timeout: float = 10):
    with trio.fail_after(timeout):
        while True:
            value = await fn()
            if value:
                return value
            await trio.sleep(0.05)


async def _device(api, client_id: str, device_id: str) -> dict | None:
    return next((d for d in await _devices(api, client_id) if d["device_id"] == device_id), None)


async def _ack(ws, seq: int) -> None:
    await ws.send_message(json.dumps({"type": "ack", "seq": seq}))


async def test_acked_seq_lasts_across_reconnect_and_restart(db_dsn, api_key):
    # No periodic flush during the test: acks reach the database when a device
    # leaves and when the process stops.
    proc = ServerProcess(db_dsn, PAYCAST_REALTIME_ACK_FLUSH_S="300").start()
    try:
        async with http(proc, api_key) as api:
            tok = await token(api, "cus_acks", "phone")
            async with connect(proc, tok) as ws:
                await welcome(ws)
                for i in range(3):
                    await publish(api, "cus_acks", i)
                await events(ws, 3)
                await _ack(ws, 2)
                await _ack(ws, 3)
                await _ack(ws, 1)  # lower: never moves it back
                connected = await _until(lambda: _has(api, "cus_acks", "phone", connections=1))
                assert set(connected) == {"object", "device_id", "connections", "last_seen_at", "acked_seq"}
                assert connected["object"] == "device"
                assert connected["last_seen_at"].endswith("Z")
            await _until(lambda: _has(api, "cus_acks", "phone", acked_seq=3, connections=0))

            # Reconnect (a new token for the same device): the ack is still there, and grows.
            async with connect(proc, await token(api, "cus_acks", "phone"), after_seq=3) as ws:
                await welcome(ws)
                await publish(api, "cus_acks", "four")
                (four,) = await events(ws, 1)
                assert four["seq"] == 4
                await _ack(ws, 4)
                await publish(api, "cus_acks", "five")
                await events(ws, 1)
                await _ack(ws, 5)
                # Stop the process right after the ack: the writer flushes on its way out.
                await ws.send_message(json.dumps({"type": "pong"}))
                await trio.sleep(0.1)
                proc.stop()
        proc = ServerProcess(db_dsn).start()
        async with http(proc, api_key) as api:
            device = await _device(api, "cus_acks", "phone")
            assert device is not None
            assert device["acked_seq"] == 5
            assert device["connections"] == 0
            assert await _device(api, "cus_nobody_here", "phone") is None
    finally:
        proc.stop()


async def _has(api, client_id: str, device_id: str, **expected) -> dict | None:
    device = await _device(api, client_id, device_id)
    if device is not None and all(device[k] == v for k, v in expected.items()):
        return device
    return None


async def _close_code(ws, timeout: float = 10) -> int:
    with trio.fail_after(timeout):
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
    return info.value.reason.code


async def _refused(server, tok: str) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with connect(server, tok):
            pass
    return info.value


async def test_deleting_a_device_closes_its_connections_everywhere_and_refuses_its_old_tokens(server, other, api_key):
    async with http(server, api_key) as api, http(other, api_key) as api_other:
        old = await token(api, "cus_revoke", "tablet")
        async with connect(other, old) as here_other, connect(server, old) as here_local, \
                connect(other, await token(api, "cus_revoke", "phone")) as phone:
            for ws in (here_other, here_local, phone):
                await welcome(ws)
            await _until(lambda: _has(api, "cus_revoke", "tablet", connections=2))

            r = await api.delete("/v1/realtime/clients/cus_revoke/devices/tablet")
            expect(r, 200)
            assert r.json() == {"object": "device", "client_id": "cus_revoke", "device_id": "tablet", "deleted": True}
            # Closed with 4001 in this process and in the other one (through the database notification).
            assert await _close_code(here_local) == 4001
            assert await _close_code(here_other) == 4001
            # Another device of the client is untouched.
            await publish(api, "cus_revoke", "still here")
            (kept,) = await events(phone, 1)
            assert kept["event"]["data"] == "still here"

        # The old token is refused by every process; a new one works.
        for proc in (server, other):
            rejected = await _refused(proc, old)
            expect(rejected, 401)
            assert json.loads(rejected.body)["error"]["code"] == "token_revoked"
        new = await token(api_other, "cus_revoke", "tablet")
        async with connect(other, new) as ws:
            await welcome(ws)
        # A deleted device starts over: listed again once it connected, with no acks.
        assert (await _until(lambda: _has(api, "cus_revoke", "tablet")))["acked_seq"] == 0
        # Another merchant's client of the same name is a different client.
        expect(await api.delete("/v1/realtime/clients/cus_other/devices/tablet"), 200)
        async with connect(server, await token(api, "cus_revoke", "tablet")) as ws:
            await welcome(ws)
