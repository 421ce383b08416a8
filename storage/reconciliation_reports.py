"""Settlement reports compared against our attempts (``POST /v1/reconciliation/reports``)."""

from __future__ import annotations

import asyncpg

from domain import render, settlement
from domain.ids import new_id


async def create(conn: asyncpg.Connection, merchant_id: str, connector: str, rows: list[dict]) -> dict:
    """Compare a connector's settlement ``rows`` with our attempts and store the report.

    Returns:
      The report's API form.
    """
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
