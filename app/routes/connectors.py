"""``/v1/connectors`` (health) and ``/v1/routing`` (the merchant's routing policy)."""

from __future__ import annotations

import trio
from quart import Blueprint, g

from app.auth import merchant_required
from app.body import json_response, parse_json, read_raw
from app.context import components
from app.idempotency import idempotent
from domain.errors import InvalidRequest
from domain.routing import STRATEGIES, RoutingConfig

bp = Blueprint("connectors", __name__)
_ROUTING_FIELDS = frozenset({"strategy", "connectors", "weights", "rules"})


@bp.get("/v1/connectors")
@merchant_required
async def list_connectors():
    return json_response(list(components().routing.health(trio.current_time()).values()))


@bp.get("/v1/routing")
@merchant_required
async def get_routing():
    return json_response((await components().routing.config(g.merchant_id)).to_dict())


@bp.put("/v1/routing")
@merchant_required
@idempotent
async def put_routing():
    routing = components().routing
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
    config = RoutingConfig.from_dict(data, routing.known_connectors)
    body = config.to_dict()
    stored = {k: v for k, v in body.items() if k != "object"}
    await routing.store(g.merchant_id, stored)
    return json_response(body)
