"""``/admin``: merchant onboarding (admin token)."""

from __future__ import annotations

from quart import Blueprint

from app.auth import admin_required
from app.body import json_response, parse
from app.context import components
from app.schemas import CreateMerchant

bp = Blueprint("admin", __name__)


@bp.post("/admin/merchants")
@admin_required
async def create_merchant():
    body = await parse(CreateMerchant)
    merchant, api_key = await components().merchants.create(body.name)
    return json_response({"merchant": merchant, "api_key": api_key}, 201)
