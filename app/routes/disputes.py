"""``/v1/disputes``: read disputes, answer them (evidence, accept); ``/v1/balance``."""

from __future__ import annotations

from quart import Blueprint, g

from actors.payment_messages import AcceptDispute, SubmitDisputeEvidence
from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.schemas import DisputeEvidence, Empty
from domain import render

bp = Blueprint("disputes", __name__)



@bp.get("/v1/disputes")
@merchant_required
async def list_disputes():
    limit, after, filters = page_params(extra_filters=("payment_id", "status"))
    items, more = await components().payments.list_disputes(g.merchant_id, limit=limit,
                                                            starting_after=after, filters=filters)
    return json_response(render.page(items, more))


@bp.get("/v1/disputes/<dispute_id>")
@merchant_required
async def get_dispute(dispute_id: str):
    return json_response(await components().payments.get_dispute(g.merchant_id, dispute_id))


async def _payment_of(dispute_id: str) -> str:
    row = await components().payments.dispute_row(g.merchant_id, dispute_id)
    return row["payment_id"]


@bp.post("/v1/disputes/<dispute_id>/evidence")
@merchant_required
@idempotent
async def submit_evidence(dispute_id: str):
    body = await parse(DisputeEvidence)
    payment_id = await _payment_of(dispute_id)
    return json_response(await components().payments.ask_payment(
        payment_id, SubmitDisputeEvidence(g.merchant_id, dispute_id, body.text)))


@bp.post("/v1/disputes/<dispute_id>/accept")
@merchant_required
@idempotent
async def accept_dispute(dispute_id: str):
    await parse(Empty)
    payment_id = await _payment_of(dispute_id)
    return json_response(await components().payments.ask_payment(payment_id, AcceptDispute(g.merchant_id, dispute_id)))


@bp.get("/v1/balance")
@merchant_required
async def get_balance():
    """The merchant's balance view: disputed amounts are held until the dispute is decided."""
    return json_response(await components().payments.dispute_balance(g.merchant_id))
