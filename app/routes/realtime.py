"""``/v1/realtime``: tokens, publish, presence and devices.

The WebSocket itself (``GET /v1/realtime``) is served in front of Quart:
:mod:`app.realtime_endpoint`.
"""

from __future__ import annotations

import datetime as dt

from quart import Blueprint, g

from app.auth import merchant_required
from app.body import json_response, parse
from app.context import components
from app.idempotency import idempotent
from app.realtime_schemas import CreateRealtimeToken, Publish
from domain import render

bp = Blueprint("realtime", __name__)


def _gateway():
    return components().realtime


@bp.post("/v1/realtime/tokens")
@merchant_required
@idempotent
async def create_token():
    body = await parse(CreateRealtimeToken)
    token, expires_at = await _gateway().issue_token(g.merchant_id, body.client_id, body.device_id, body.ttl_s)
    return json_response({"token": token,
                          "expires_at": render.iso(dt.datetime.fromtimestamp(expires_at, dt.timezone.utc))}, 201)


@bp.post("/v1/realtime/publish")
@merchant_required
@idempotent
async def publish():
    body = await parse(Publish)
    seq, connections = await _gateway().publish(g.merchant_id, body.client_id, body.device_id, body.topic,
                                                body.event.model_dump())
    return json_response({"seq": seq, "connections": connections}, 202)


@bp.get("/v1/realtime/clients/<path:client_id>/devices")
@merchant_required
async def devices(client_id: str):
    data = await _gateway().devices_of(g.merchant_id, client_id)
    for device in data:
        device["last_seen_at"] = render.iso(device["last_seen_at"]) if device["last_seen_at"] else None
    return json_response({"object": "list", "data": data, "has_more": False})


@bp.delete("/v1/realtime/clients/<path:client_id>/devices/<device_id>")
@merchant_required
async def delete_device(client_id: str, device_id: str):
    await _gateway().delete_device(g.merchant_id, client_id, device_id)
    return json_response({"object": "device", "client_id": client_id, "device_id": device_id, "deleted": True})


@bp.get("/v1/realtime/clients/<path:client_id>")
@merchant_required
async def presence(client_id: str):
    return json_response(await _gateway().presence(g.merchant_id, client_id))
