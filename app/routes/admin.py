"""``/admin``: merchant onboarding (admin token)."""

from __future__ import annotations

from quart import Blueprint, current_app

from app.auth import admin_required
from app.body import json_response, parse
from app.schemas import CreateMerchant
from storage import merchants

bp = Blueprint("admin", __name__)


@bp.post("/admin/merchants")
@admin_required
async def create_merchant():
    body = await parse(CreateMerchant)
    merchant, api_key = await current_app.config["SYSTEM"].db.transaction(merchants.create, body.name)
    return json_response({"merchant": merchant, "api_key": api_key}, 201)
