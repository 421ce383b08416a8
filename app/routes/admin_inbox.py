"""``/admin/inbox``: the incoming gateway webhook inbox, for operators (admin token).

List and read stored webhooks (dead letters and unmatched events included) and
replay one once its cause is fixed (API.md "Incoming webhook inbox").
"""

from __future__ import annotations

from quart import Blueprint, current_app

from app.auth import admin_required
from app.body import json_response, page_params
from domain import render
from domain.errors import InvalidRequest, NotFound
from storage import inbox

bp = Blueprint("admin_inbox", __name__)

STATUSES = ("pending", "applied", "ignored", "unmatched", "unhandled", "dead")


def _system():
    return current_app.config["SYSTEM"]


@bp.get("/admin/inbox")
@admin_required
async def list_inbox():
    limit, after, filters = page_params(extra_filters=("status", "connector"))
    if filters["status"] is not None and filters["status"] not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}.", param="status")
    items, more = await _system().db.transaction(
        inbox.list_items, limit=limit, starting_after=after, status=filters["status"],
        connector=filters["connector"],
    )
    return json_response(render.page(items, more))


@bp.get("/admin/inbox/<inbox_id>")
@admin_required
async def get_inbox_item(inbox_id: str):
    item = await _system().db.transaction(inbox.get_item, inbox_id)
    if item is None:
        raise NotFound(f"No such inbox item: '{inbox_id}'", param="id")
    return json_response(item)


@bp.post("/admin/inbox/<inbox_id>/replay")
@admin_required
async def replay_inbox_item(inbox_id: str):
    item = await _system().inbox_processor.replay(inbox_id)
    if item is None:
        raise NotFound(f"No such inbox item: '{inbox_id}'", param="id")
    return json_response(item)
