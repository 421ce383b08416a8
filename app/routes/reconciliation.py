"""``POST /v1/reconciliation/reports?connector=``: compare a settlement CSV."""

from __future__ import annotations

from quart import Blueprint, g, request

from app.auth import merchant_required
from app.body import json_response, read_raw
from app.context import components
from app.idempotency import idempotent
from domain import settlement
from domain.errors import InvalidRequest

bp = Blueprint("reconciliation", __name__)


@bp.post("/v1/reconciliation/reports")
@merchant_required
@idempotent
async def create_report():
    system = components()
    connector = request.args.get("connector")
    if not connector or connector not in system.routing.known_connectors:
        raise InvalidRequest("connector must name a known connector.", param="connector")
    try:
        text = (await read_raw()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("The CSV must be UTF-8.", param="body") from None
    rows = settlement.parse_csv(text)
    return json_response(await system.reconciliation_reports.create(g.merchant_id, connector, rows), 201)
