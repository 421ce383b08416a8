"""DESIGN.md's invariants as SQL, checked against the database.

Each check returns rows that violate it; an empty result everywhere means the
data is consistent. Used by ``run.py check`` and by the crash and chaos tests.
"""

from __future__ import annotations

import asyncpg

TERMINAL = ("payment.succeeded", "payment.failed", "payment.canceled")

CHECKS: dict[str, str] = {
    "more than one successful charge per payment": """
        SELECT payment_id, count(*) AS successes FROM payment_attempts
        WHERE status IN ('succeeded', 'authorized') GROUP BY payment_id HAVING count(*) > 1""",
    "captured more than authorized / received more than amount": """
        SELECT id, amount, amount_received, amount_capturable FROM payments
        WHERE amount_received > amount OR amount_capturable > amount
           OR (status = 'succeeded' AND amount_received = 0)
           OR (status IN ('failed', 'canceled', 'requires_confirmation') AND amount_received <> 0)""",
    "refunded more than received": """
        SELECT id, amount_received, amount_refunded FROM payments WHERE amount_refunded > amount_received""",
    "a terminal status changed": """
        SELECT object_id, array_agg(type ORDER BY seq) AS types FROM events
        WHERE type LIKE 'payment.%' AND type NOT IN ('payment.created', 'payment.review_required')
        GROUP BY merchant_id, object_id
        HAVING count(*) FILTER (WHERE type IN ('payment.succeeded', 'payment.failed', 'payment.canceled')) > 1
            OR max(seq) FILTER (WHERE type IN ('payment.succeeded', 'payment.failed', 'payment.canceled'))
               < max(seq)""",
    "payment status disagrees with its last event": """
        SELECT p.id, p.status, e.type FROM payments p
        JOIN LATERAL (SELECT type FROM events WHERE object_id = p.id AND type LIKE 'payment.%'
                      AND type <> 'payment.review_required' ORDER BY seq DESC LIMIT 1) e ON true
        WHERE e.type <> 'payment.' || p.status AND NOT (e.type = 'payment.created' AND p.status IN
              ('requires_confirmation', 'processing'))""",
    "gap in per-merchant event seq": """
        SELECT m.id, m.event_seq, count(e.seq) AS events, coalesce(max(e.seq), 0) AS max_seq
        FROM merchants m LEFT JOIN events e ON e.merchant_id = m.id
        GROUP BY m.id, m.event_seq
        HAVING count(e.seq) <> m.event_seq OR coalesce(max(e.seq), 0) <> m.event_seq""",
    "gap in per-client realtime seq": """
        SELECT c.merchant_id, c.client_id, c.last_seq, count(m.seq) AS messages,
               min(m.seq) AS min_seq, max(m.seq) AS max_seq
        FROM realtime_clients c
        LEFT JOIN realtime_messages m ON m.merchant_id = c.merchant_id AND m.client_id = c.client_id
        GROUP BY c.merchant_id, c.client_id, c.last_seq
        -- the retention purge removes the oldest messages, never the newest or a middle one
        HAVING coalesce(max(m.seq), c.last_seq) <> c.last_seq
            OR (count(m.seq) > 0 AND count(m.seq) <> max(m.seq) - min(m.seq) + 1)""",
    "webhook applied more than once": """
        SELECT connector, event_id, count(*) FROM webhook_inbox GROUP BY connector, event_id HAVING count(*) > 1""",
    "acknowledged webhook not processed after 5 minutes": """
        SELECT id, connector, event_id FROM webhook_inbox
        WHERE processed_at IS NULL AND received_at < now() - interval '5 minutes'""",
}


async def violations(conn: asyncpg.Connection) -> dict[str, list[dict]]:
    """Every check with the rows that violate it (only checks that found some)."""
    found: dict[str, list[dict]] = {}
    for name, sql in CHECKS.items():
        rows = await conn.fetch(sql)
        if rows:
            found[name] = [dict(r) for r in rows]
    return found
