"""``/admin/inbox``: the incoming gateway webhook inbox, for operators (admin token).

List and read stored webhooks (dead letters and unmatched events included) and
replay one once its cause is fixed (docs/api.md "Incoming webhook inbox").
"""

from __future__ import annotations

from quart import Blueprint

from app.auth import admin_required
from app.body import json_response, page_params
from app.context import components
from domain import render
from domain.errors import InvalidRequest, NotFound

bp = Blueprint("admin_inbox", __name__)

STATUSES = ("pending", "applied", "ignored", "unmatched", "unhandled", "dead")



@bp.get("/admin/inbox")
@admin_required
async def list_inbox():
    limit, after, filters = page_params(extra_filters=("status", "connector"))
    if filters["status"] is not None and filters["status"] not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}.", param="status")
    items, more = await components().inbox.list_items(
        limit=limit, starting_after=after, status=filters["status"],
        connector=filters["connector"],
    )
    return json_response(render.page(items, more))


@bp.get("/admin/inbox/<inbox_id>")
@admin_required
async def get_inbox_item(inbox_id: str):
    item = await components().inbox.get_item(inbox_id)
    if item is None:
        raise NotFound(f"No such inbox item: '{inbox_id}'", param="id")
    return json_response(item)


@bp.post("/admin/inbox/<inbox_id>/replay")
@admin_required
async def replay_inbox_item(inbox_id: str):
    item = await components().inbox.processor.replay(inbox_id)
    if item is None:
        raise NotFound(f"No such inbox item: '{inbox_id}'", param="id")
    return json_response(item)
