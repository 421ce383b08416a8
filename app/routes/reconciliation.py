"""``POST /v1/reconciliation/reports?connector=``: compare a settlement CSV."""

from __future__ import annotations

from quart import Blueprint, current_app, g, request

from app.auth import merchant_required
from app.body import json_response, read_raw
from app.idempotency import idempotent
from domain import render, settlement
from domain.errors import InvalidRequest
from domain.ids import new_id

bp = Blueprint("reconciliation", __name__)


async def _create_report(conn, merchant_id: str, connector: str, rows: list[dict]) -> dict:
    records = await conn.fetch(
        "SELECT a.connector_txn_id, a.status, p.amount, p.amount_received, p.currency"
        " FROM payment_attempts a JOIN payments p ON p.id = a.payment_id"
        " WHERE a.merchant_id = $1 AND a.connector = $2 AND a.connector_txn_id IS NOT NULL",
        merchant_id, connector,
    )
    ours = {r["connector_txn_id"]: {"amount": r["amount_received"] or r["amount"], "currency": r["currency"],
                                    "status": r["status"]} for r in records}
    result = settlement.compare(rows, ours)
    row = await conn.fetchrow(
        "INSERT INTO reconciliation_reports (id, merchant_id, connector, matched, mismatched,"
        " missing_in_paycast, missing_in_report) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at",
        new_id("rcn"), merchant_id, connector, result["matched"], result["mismatched"],
        result["missing_in_paycast"], result["missing_in_report"],
    )
    return {"id": row["id"], "object": "reconciliation_report", "connector": connector, **result,
            "created_at": render.iso(row["created_at"])}


@bp.post("/v1/reconciliation/reports")
@merchant_required
@idempotent
async def create_report():
    system = current_app.config["SYSTEM"]
    connector = request.args.get("connector")
    if not connector or connector not in system.known_connectors:
        raise InvalidRequest("connector must name a known connector.", param="connector")
    try:
        text = (await read_raw()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("The CSV must be UTF-8.", param="body") from None
    rows = settlement.parse_csv(text)
    return json_response(await system.db.transaction(_create_report, g.merchant_id, connector, rows), 201)
