"""``/v1/orders``."""

from __future__ import annotations

from quart import Blueprint, g

from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.schemas import CreateOrder
from domain import render

bp = Blueprint("orders", __name__)


@bp.post("/v1/orders")
@merchant_required
@idempotent
async def create_order():
    body = await parse(CreateOrder)
    order = await components().orders.create(g.merchant_id, body.amount, body.currency,
                                             body.customer_id, body.metadata or {})
    return json_response(order, 201)


@bp.get("/v1/orders/<order_id>")
@merchant_required
async def get_order(order_id: str):
    return json_response(await components().orders.get(g.merchant_id, order_id))


@bp.get("/v1/orders")
@merchant_required
async def list_orders():
    limit, after, filters = page_params(extra_filters=("status", "customer_id"))
    items, more = await components().orders.list_page(g.merchant_id, limit=limit, starting_after=after,
                                                      **filters)
    return json_response(render.page(items, more))
