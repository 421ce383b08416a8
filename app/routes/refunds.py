"""``/v1/refunds``: refund a payment (through its actor), read refunds."""

from __future__ import annotations

from quart import Blueprint, g

from actors.payment_messages import Refund
from app.auth import merchant_required
from app.body import Reply, json_reply, json_response, page_params, validated
from app.context import components
from app.merchant_posts import quart_post
from app.schemas import CreateRefund
from components import Components
from domain import render

bp = Blueprint("refunds", __name__)


async def create(components_: Components, merchant_id: str, raw: bytes) -> Reply:
    """``POST /v1/refunds`` (a hot POST, :mod:`app.merchant_posts`)."""
    body = validated(CreateRefund, raw)
    refund = await components_.payments.ask_payment(
        body.payment_id, Refund(merchant_id, body.amount, body.reason, body.metadata or {})
    )
    return json_reply(refund, 201)


@bp.post("/v1/refunds")  # served by app.merchant_endpoint in production (see app/routes/payments.py)
async def create_refund():
    return await quart_post(create)


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
