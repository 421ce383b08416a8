"""``/v1/events``: the merchant's event log."""

from __future__ import annotations

from quart import Blueprint, g, request

from app.auth import merchant_required
from app.body import json_response, page_params
from app.context import components
from domain import render
from domain.errors import InvalidRequest, NotFound

bp = Blueprint("events", __name__)


@bp.get("/v1/events")
@merchant_required
async def list_events():
    limit, after, filters = page_params(extra_filters=("type", "object_id"))
    raw_seq = request.args.get("after_seq")
    # isascii: "²".isdigit() is True but int("²") raises; the length first (int() refuses
    # over 4,300 digits with a ValueError), then the bound keeps it a bigint.
    if raw_seq is not None and (not (raw_seq.isascii() and raw_seq.isdigit()) or len(raw_seq) > 19
                                or int(raw_seq) >= 2**63):
        raise InvalidRequest("after_seq must be a non-negative integer.", param="after_seq")
    items, more = await components().events.list_page(
        g.merchant_id, limit=limit, starting_after=after, type_=filters["type"],
        object_id=filters["object_id"], after_seq=int(raw_seq) if raw_seq is not None else None,
    )
    return json_response(render.page(items, more))


@bp.get("/v1/events/<event_id>")
@merchant_required
async def get_event(event_id: str):
    event = await components().events.get(g.merchant_id, event_id)
    if event is None:
        raise NotFound(f"No such event: '{event_id}'", param="id")
    return json_response(event)
