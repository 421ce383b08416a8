"""``/v1/refunds``: refund a payment (through its actor), read refunds."""

from __future__ import annotations

from quart import Blueprint, g

from actors.payment_messages import Refund
from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.schemas import CreateRefund
from domain import render

bp = Blueprint("refunds", __name__)



@bp.post("/v1/refunds")
@merchant_required
@idempotent
async def create_refund():
    body = await parse(CreateRefund)
    refund = await components().payments.ask_payment(
        body.payment_id, Refund(g.merchant_id, body.amount, body.reason, body.metadata or {})
    )
    return json_response(refund, 201)


@bp.get("/v1/refunds/<refund_id>")
@merchant_required
async def get_refund(refund_id: str):
    return json_response(await components().payments.get_refund(g.merchant_id, refund_id))


@bp.get("/v1/refunds")
@merchant_required
async def list_refunds():
    limit, after, filters = page_params(extra_filters=("payment_id",))
    items, more = await components().payments.list_refunds(g.merchant_id, limit=limit,
                                                           starting_after=after, payment_id=filters["payment_id"])
    return json_response(render.page(items, more))
