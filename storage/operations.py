"""What an on-call engineer looks at first (``/metrics``), in one crossing."""

from __future__ import annotations

import asyncpg

from storage import inbox, webhook_deliveries


async def counts(conn: asyncpg.Connection) -> dict:
    """Payments by status, inbox and delivery rows by status, lags, reconciliation backlog, reviews, stuck payments."""
    return {
        "payments": await conn.fetch("SELECT status, count(*) AS n FROM payments GROUP BY status"),
        "inbox": await inbox.counts(conn),
        "inbox_lag": await conn.fetchval(
            "SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8"
            " FROM webhook_inbox WHERE processed_at IS NULL"),
        "backlog": await conn.fetchval(
            "SELECT count(*) FROM payments WHERE status = 'processing' AND processing_deadline < now()"),
        "review": await conn.fetchval(
            "SELECT count(*) FROM payments WHERE status = 'processing' AND review_required"),
        "stuck": await conn.fetchval(
            "SELECT count(*) FROM payments WHERE status = 'processing' AND updated_at < now() - interval '10 minutes'"),
        "deliveries": await webhook_deliveries.counts(conn),
        "outbox_lag": await conn.fetchval(
            "SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8"
            " FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()"),
    }

