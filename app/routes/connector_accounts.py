"""``/v1/connector_accounts``: merchants' own gateway accounts (Stripe, Razorpay).

Bodies are validated in :mod:`domain.connector_accounts` (not pydantic: its
error messages may quote the input, and a credential must never be echoed).
"""

from __future__ import annotations

from quart import Blueprint, g

from app.auth import merchant_required
from app.body import json_response, page_params, parse_json, read_raw
from app.context import components
from app.idempotency import idempotent
from domain import render

bp = Blueprint("connector_accounts", __name__)


@bp.post("/v1/connector_accounts")
@merchant_required
@idempotent
async def create_account():
    data = parse_json(await read_raw())
    return json_response(await components().connector_accounts.create(g.merchant_id, data), 201)


@bp.get("/v1/connector_accounts")
@merchant_required
async def list_accounts():
    limit, after, _ = page_params()
    items, more = await components().connector_accounts.list_page(g.merchant_id, limit=limit, starting_after=after)
    return json_response(render.page(items, more))


@bp.get("/v1/connector_accounts/<mca_id>")
@merchant_required
async def get_account(mca_id: str):
    return json_response(await components().connector_accounts.get(g.merchant_id, mca_id))


@bp.post("/v1/connector_accounts/<mca_id>")
@merchant_required
@idempotent
async def update_account(mca_id: str):
    data = parse_json(await read_raw())
    return json_response(await components().connector_accounts.update(g.merchant_id, mca_id, data))


@bp.delete("/v1/connector_accounts/<mca_id>")
@merchant_required
async def delete_account(mca_id: str):
    return json_response(await components().connector_accounts.disable(g.merchant_id, mca_id))
