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
    """The simulators' circuit breakers, then the merchant's active real connectors
    (one breaker per connector account; ``account_id`` names it)."""
    system = components()
    now = trio.current_time()
    listed = list(system.routing.health(now).values())
    for name, account_id in (await system.connector_accounts.active(g.merchant_id)).items():
        listed.append(system.routing.account_breaker(account_id, name).snapshot(now) | {"account_id": account_id})
    return json_response(listed)


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
    await _check_accounts(config, routing.real_connectors)
    body = config.to_dict()
    stored = {k: v for k, v in body.items() if k != "object"}
    await routing.store(g.merchant_id, stored)
    return json_response(body)


async def _check_accounts(config: RoutingConfig, real: frozenset[str]) -> None:
    """A real connector may be named only while the merchant has an active account for it.

    Raises:
      InvalidRequest: naming the field (``connectors``, ``weights``, ``rules.N.connectors``).
    """
    named = [("connectors", config.connectors), ("weights", tuple(config.weights))]
    named += [(f"rules.{i}.connectors", rule.connectors) for i, rule in enumerate(config.rules)]
    wanted = {name for _, names in named for name in names if name in real}
    if not wanted:
        return
    active = await components().connector_accounts.active(g.merchant_id)
    for param, names in named:
        for name in names:
            if name in real and name not in active:
                raise InvalidRequest(f"{name} needs an active connector account (POST /v1/connector_accounts) "
                                     "before routing may name it.", param=param)
