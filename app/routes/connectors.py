"""``/v1/connectors`` (health) and ``/v1/routing`` (the merchant's routing policy)."""

from __future__ import annotations

import trio
from quart import Blueprint, current_app, g

from app.auth import merchant_required
from app.body import json_response, parse_json, read_raw
from app.idempotency import idempotent
from domain.errors import InvalidRequest
from domain.routing import STRATEGIES, RoutingConfig
from storage import merchants

bp = Blueprint("connectors", __name__)
_ROUTING_FIELDS = frozenset({"strategy", "connectors", "weights", "rules"})


@bp.get("/v1/connectors")
@merchant_required
async def list_connectors():
    system = current_app.config["SYSTEM"]
    now = trio.current_time()
    return json_response([breaker.snapshot(now) for breaker in system.breakers.values()])


@bp.get("/v1/routing")
@merchant_required
async def get_routing():
    system = current_app.config["SYSTEM"]
    stored = await system.db.transaction(merchants.routing, g.merchant_id)
    return json_response(RoutingConfig.from_dict(stored, system.known_connectors).to_dict())


@bp.put("/v1/routing")
@merchant_required
@idempotent
async def put_routing():
    system = current_app.config["SYSTEM"]
    data = parse_json(await read_raw())
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(data) - _ROUTING_FIELDS)
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
    # PUT replaces the whole configuration: nothing is filled in silently.
    for required in ("strategy", "connectors"):
        if data.get(required) in (None, "", []):
            raise InvalidRequest(f"Missing required param: {required}.", param=required, code="parameter_missing")
        if required == "strategy" and data["strategy"] not in STRATEGIES:
            raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}.", param="strategy")
    config = RoutingConfig.from_dict(data, system.known_connectors)
    body = config.to_dict()
    stored = {k: v for k, v in body.items() if k != "object"}
    await system.db.transaction(merchants.set_routing, g.merchant_id, stored)
    system.forget_routing(g.merchant_id)
    return json_response(body)
