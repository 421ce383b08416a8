"""``/v1/realtime``: tokens, the WebSocket, publish and presence.

The WebSocket handshake is refused with an HTTP answer before any frame flows
when the token is missing, bad (401 ``invalid_token``), expired (401
``token_expired``) or issued for a device before it was deleted (401
``token_revoked``), when ``after_seq`` is malformed (400) or when the database
cannot be read (503): Quart sends the error response through the ASGI
``websocket.http.response`` extension, which hypercorn supports.
"""

from __future__ import annotations

import datetime as dt
import re

from quart import Blueprint, g, websocket

from app.auth import merchant_required
from app.body import json_response, parse
from app.context import components
from app.idempotency import idempotent
from app.realtime_schemas import CreateRealtimeToken, Publish
from app.realtime_socket import QuartSocket
from domain import render
from domain.errors import InvalidRequest

bp = Blueprint("realtime", __name__)
# The WebSocket on its own blueprint: the realtime role serves it, the api role
# the HTTP routes above (config/roles.py).
socket_bp = Blueprint("realtime_socket", __name__)
_SEQ = re.compile(r"^[0-9]{1,18}$")


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


@socket_bp.websocket("/v1/realtime")
async def socket():
    gateway = _gateway()
    raw_after = websocket.args.get("after_seq")
    if raw_after is not None and not _SEQ.match(raw_after):
        raise InvalidRequest("after_seq must be a non-negative integer.", param="after_seq")
    after_seq = int(raw_after) if raw_after is not None else None
    claims = await gateway.verify(websocket.args.get("token", ""))
    conn = await gateway.open(claims, after_seq)
    try:
        await websocket.accept()
    except BaseException:
        gateway.forget(conn)
        raise
    await gateway.serve(conn, QuartSocket(websocket._get_current_object()), after_seq)
