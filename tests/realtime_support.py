"""Helpers for realtime end-to-end tests: async HTTP, tokens, WebSocket clients
that answer pings, and frame collection with timeouts (never fixed sleeps)."""

from __future__ import annotations

import json
import urllib.parse

import httpx
import trio
from trio_websocket import open_websocket_url
from tests.support import expect


def http(server, api_key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)


async def token(api, client_id: str, device_id: str | None = None, **extra) -> str:
    body = {"client_id": client_id, **extra}
    if device_id is not None:
        body["device_id"] = device_id
    r = await api.post("/v1/realtime/tokens", json=body)
    expect(r, 201)
    return r.json()["token"]


def ws_url(server, tok: str, after_seq: int | None = None) -> str:
    query = {"token": tok}
    if after_seq is not None:
        query["after_seq"] = str(after_seq)
    return server.url.replace("http://", "ws://") + "/v1/realtime?" + urllib.parse.urlencode(query)


def connect(server, tok: str, after_seq: int | None = None, **kw):
    """``async with connect(...) as ws`` — a trio-websocket client."""
    return open_websocket_url(ws_url(server, tok, after_seq), **kw)


async def frame(ws, timeout: float = 10) -> dict:
    """The next non-ping frame (pings are answered with a pong)."""
    with trio.fail_after(timeout):
        while True:
            data = json.loads(await ws.get_message())
            if data.get("type") == "ping":
                await ws.send_message(json.dumps({"type": "pong"}))
                continue
            return data


async def welcome(ws, timeout: float = 10) -> dict:
    first = await frame(ws, timeout)
    assert first["type"] == "welcome", first
    return first


async def events(ws, n: int, timeout: float = 10) -> list[dict]:
    """The next ``n`` frames, which must all be events."""
    out = []
    for _ in range(n):
        f = await frame(ws, timeout)
        assert f["type"] == "event", f
        out.append(f)
    return out


async def publish(api, client_id: str, data: object = None, **extra) -> dict:
    body = {"client_id": client_id, "event": {"type": "test.message", "data": data}, **extra}
    r = await api.post("/v1/realtime/publish", json=body)
    expect(r, 202)
    return r.json()
