"""The invariants of docs/architecture.md as SQL, checked against the database.

Each check returns rows that violate it; an empty result everywhere means the
data is consistent. Used by ``run.py check`` and by the crash and chaos tests.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from domain import latency

# The latency histogram's finite bounds as an SQL array literal (the rollups' check labels each attempt).
_LATENCY_BOUNDS = "ARRAY[" + ", ".join(f"{b:g}" for b in latency.BOUNDS_MS) + "]::numeric[]"
TERMINAL = ("payment.succeeded", "payment.failed", "payment.canceled")

CHECKS: dict[str, str] = {
    # "At most one successful attempt" is a unique index (attempts_one_success);
    # what the schema cannot see is a payment and its attempts disagreeing.
    "payment status disagrees with its successful attempt": """
        SELECT p.id, p.status, count(a.id) FILTER (WHERE a.status IN ('succeeded', 'authorized')) AS successes
        FROM payments p LEFT JOIN payment_attempts a ON a.payment_id = p.id
        GROUP BY p.id, p.status
        HAVING (p.status IN ('succeeded', 'requires_capture')
                AND count(a.id) FILTER (WHERE a.status IN ('succeeded', 'authorized')) = 0)
            OR (p.status IN ('requires_confirmation', 'requires_action', 'failed')
                AND count(a.id) FILTER (WHERE a.status IN ('succeeded', 'authorized')) > 0)""",
    # A payment waiting for its customer waits on exactly one attempt: the one
    # the abandonment rule asks the gateway about and cancels there.
    "requires_action without exactly one open attempt": """
        SELECT p.id, count(a.id) AS open_attempts FROM payments p
        LEFT JOIN payment_attempts a ON a.payment_id = p.id AND a.status IN ('started', 'unknown')
        WHERE p.status = 'requires_action' GROUP BY p.id HAVING count(a.id) <> 1""",
    "cancellation_reason on a payment that is not canceled": """
        SELECT id, status, cancellation_reason FROM payments
        WHERE cancellation_reason IS NOT NULL AND status <> 'canceled'""",
    "captured more than authorized / received more than amount": """
        SELECT id, amount, amount_received, amount_capturable FROM payments
        WHERE amount_received > amount OR amount_capturable > amount
           OR (status = 'succeeded' AND amount_received = 0)
           OR (status IN ('failed', 'canceled', 'requires_confirmation', 'requires_action')
               AND (amount_received <> 0 OR amount_capturable <> 0))""",
    # payments.amount_refunded <= amount_received is a CHECK; the refunds
    # themselves are not bound by it, so their sum is checked here.
    "refunds exceed the amount received": """
        SELECT p.id, p.amount_received, sum(r.amount) AS refunds FROM payments p
        JOIN refunds r ON r.payment_id = p.id AND r.status <> 'failed'
        GROUP BY p.id, p.amount_received HAVING sum(r.amount) > p.amount_received""",
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
    # Every state change writes its event in the same transaction: a payment
    # committed without its events is a unit of work split in two.
    # (Events older than the oldest kept one went with their partition, retention.)
    "payment without its events": """
        SELECT p.id, p.status FROM payments p
        WHERE (p.created_at >= (SELECT coalesce(min(created_at), '-infinity') FROM events) AND NOT EXISTS (
               SELECT 1 FROM events e WHERE e.merchant_id = p.merchant_id AND e.object_id = p.id
               AND e.type = 'payment.created'))
           OR (p.status IN ('succeeded', 'failed', 'canceled', 'requires_capture', 'requires_action')
               AND p.updated_at >= (SELECT coalesce(min(created_at), '-infinity') FROM events) AND NOT EXISTS (
               SELECT 1 FROM events e WHERE e.merchant_id = p.merchant_id AND e.object_id = p.id
               AND e.type = 'payment.' || p.status))""",
    "gap in per-merchant event seq": """
        SELECT m.id, m.event_seq, count(e.seq) AS events, coalesce(max(e.seq), 0) AS max_seq
        FROM merchants m LEFT JOIN events e ON e.merchant_id = m.id
        GROUP BY m.id, m.event_seq
        -- the retention (PAYCAST_RETENTION_EVENTS_DAYS) drops the oldest events, never the newest or a middle one
        HAVING coalesce(max(e.seq), m.event_seq) <> m.event_seq
            OR (count(e.seq) > 0 AND count(e.seq) <> max(e.seq) - min(e.seq) + 1)
            OR count(e.seq) <> count(DISTINCT e.seq)""",
    "gap in per-client realtime seq": """
        SELECT c.merchant_id, c.client_id, c.last_seq, count(m.seq) AS messages,
               min(m.seq) AS min_seq, max(m.seq) AS max_seq
        FROM realtime_clients c
        LEFT JOIN realtime_messages m ON m.merchant_id = c.merchant_id AND m.client_id = c.client_id
        GROUP BY c.merchant_id, c.client_id, c.last_seq
        -- the retention purge removes the oldest messages, never the newest or a middle one
        HAVING coalesce(max(m.seq), c.last_seq) <> c.last_seq
            OR (count(m.seq) > 0 AND count(m.seq) <> max(m.seq) - min(m.seq) + 1)""",
    # The inbox is unique on (connector, event_id); a webhook applied twice shows
    # as its outcome written twice: one object, the same final event twice.
    "outcome event written more than once": """
        SELECT merchant_id, object_id, type, count(*) AS times FROM events
        WHERE type IN ('refund.succeeded', 'refund.failed', 'dispute.opened', 'dispute.won', 'dispute.lost',
                       'dispute.accepted', 'account.deposit.completed', 'account.deposit.failed',
                       'account.withdrawal.completed', 'account.withdrawal.failed',
                       'payment.created', 'payment.requires_capture')
        GROUP BY merchant_id, object_id, type HAVING count(*) > 1""",
    # A webhook waiting out its retry schedule (failures > 0, next try leased
    # ahead) is being handled, and visible in /admin/inbox; one that nobody
    # has tried or scheduled for 5 minutes was lost by the processors.
    "acknowledged webhook neither applied nor scheduled after 5 minutes": """
        SELECT id, connector, event_id FROM webhook_inbox
        WHERE processed_at IS NULL AND received_at < now() - interval '5 minutes'
          AND failures = 0 AND (claimed_until IS NULL OR claimed_until < now())""",
    # ---- refunds: amount_refunded is a cached sum, verified against its refunds.
    "amount_refunded differs from the sum of non-failed refunds": """
        SELECT p.id, p.amount_refunded, COALESCE(sum(r.amount), 0) AS refunds FROM payments p
        LEFT JOIN refunds r ON r.payment_id = p.id AND r.status <> 'failed'
        GROUP BY p.id, p.amount_refunded HAVING p.amount_refunded <> COALESCE(sum(r.amount), 0)""",
    "refund of a payment that did not succeed": """
        SELECT r.id, r.payment_id, p.status FROM refunds r JOIN payments p ON p.id = r.payment_id
        WHERE p.status <> 'succeeded' OR r.merchant_id <> p.merchant_id OR r.currency <> p.currency""",
    "order refunded but not fully refunded": """
        SELECT o.id FROM orders o WHERE o.status = 'refunded' AND EXISTS (
            SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.status = 'succeeded'
            AND p.amount_received > (SELECT COALESCE(sum(amount), 0) FROM refunds
                                     WHERE payment_id = p.id AND status = 'succeeded'))""",
    "refund or dispute status disagrees with its last event": """
        SELECT x.id, x.status, e.type FROM (
            SELECT id, status, 'refund' AS kind FROM refunds WHERE status <> 'pending'
            UNION ALL SELECT id, status, 'dispute' FROM disputes WHERE status <> 'under_review') x
        LEFT JOIN LATERAL (SELECT type FROM events WHERE object_id = x.id ORDER BY seq DESC LIMIT 1) e ON true
        WHERE e.type IS DISTINCT FROM x.kind || '.' || CASE WHEN x.status = 'needs_response' THEN 'opened'
                                                             ELSE x.status END""",
    # ---- the wallet ledger: double entry, balances are sums of entries.
    "ledger movement not a balanced pair": """
        SELECT transaction_id, movement, count(*) AS entries, sum(amount) AS total FROM ledger_entries
        GROUP BY transaction_id, movement HAVING count(*) <> 2 OR sum(amount) <> 0""",
    "ledger entry on another merchant's or currency's wallet": """
        SELECT l.id, l.transaction_id FROM ledger_entries l
        JOIN account_transactions t ON t.id = l.transaction_id
        WHERE l.merchant_id <> t.merchant_id OR l.currency <> t.currency
           OR (l.account_id IS NOT NULL AND l.account_id <> t.account_id)""",
    "wallet book below zero": """
        SELECT account_id, book, sum(amount) AS total FROM ledger_entries WHERE account_id IS NOT NULL
        GROUP BY account_id, book HAVING sum(amount) < 0""",
    "wallet transaction's ledger movements disagree with its status": """
        SELECT t.id, t.type, t.status, array_agg(DISTINCT l.movement) FILTER (WHERE l.movement IS NOT NULL) AS movements
        FROM account_transactions t LEFT JOIN ledger_entries l ON l.transaction_id = t.id
        GROUP BY t.id, t.type, t.status, t.amount
        HAVING COALESCE(array_agg(DISTINCT l.movement ORDER BY l.movement)
                        FILTER (WHERE l.movement IS NOT NULL), '{}') <> CASE
                 WHEN t.type = 'deposit' AND t.status = 'completed' THEN ARRAY['deposit']
                 WHEN t.type = 'deposit' THEN '{}'::text[]
                 WHEN t.status = 'pending' THEN ARRAY['reserve']
                 WHEN t.status = 'completed' THEN ARRAY['payout', 'reserve']
                 ELSE ARRAY['release', 'reserve'] END
            OR bool_or(l.account_id IS NOT NULL AND abs(l.amount) <> t.amount)""",
    "wallet balance differs from the sum of its completed transactions": """
        SELECT a.id, b.balance, b.reserved, t.completed, t.pending_withdrawals FROM accounts a
        JOIN LATERAL (SELECT COALESCE(sum(amount), 0) AS balance,
                             COALESCE(sum(amount) FILTER (WHERE book = 'reserved'), 0) AS reserved
                      FROM ledger_entries WHERE account_id = a.id) b ON true
        JOIN LATERAL (SELECT COALESCE(sum(CASE WHEN type = 'deposit' THEN amount ELSE -amount END)
                                      FILTER (WHERE status = 'completed'), 0) AS completed,
                             COALESCE(sum(amount) FILTER (WHERE type = 'withdrawal' AND status = 'pending'), 0)
                                 AS pending_withdrawals
                      FROM account_transactions WHERE account_id = a.id) t ON true
        -- A reservation moves money between the wallet's books: it stays in the balance until paid out.
        WHERE b.balance <> t.completed OR b.reserved <> t.pending_withdrawals""",
    "deposit status disagrees with its payment": """
        SELECT t.id, t.status, p.status AS payment_status FROM account_transactions t
        JOIN payments p ON p.id = t.payment_id
        WHERE (t.status = 'completed') <> (p.status = 'succeeded')
           OR (t.status = 'failed') <> (p.status IN ('failed', 'canceled'))
           OR t.amount <> p.amount""",
    # ---- outgoing webhooks.
    "webhook delivery succeeded without a 2xx attempt": """
        SELECT d.id FROM webhook_deliveries d WHERE d.status = 'succeeded' AND NOT EXISTS (
            SELECT 1 FROM webhook_attempts a WHERE a.delivery_id = d.id AND a.status_code BETWEEN 200 AND 299)
        -- attempts older than their retention are gone with their partition
        AND d.delivered_at >= (SELECT min(created_at) FROM webhook_attempts)""",
    "webhook delivery for another merchant's event": """
        SELECT d.id FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
        JOIN webhook_endpoints w ON w.id = d.endpoint_id
        WHERE e.merchant_id <> d.merchant_id OR w.merchant_id <> d.merchant_id OR e.type <> d.event_type""",
    # ---- connector accounts and secrets at rest (storage/secrets_box.py).
    # Every stored secret is in the sealed form (start-up seals what an older
    # build left in plaintext); the rows named, never their values.
    "secret stored unencrypted": """
        SELECT 'webhook_endpoints' AS stored_in, id FROM webhook_endpoints WHERE secret NOT LIKE 'pcs1.%'
        UNION ALL
        SELECT 'connector_accounts', id FROM connector_accounts
        WHERE credentials_sealed NOT LIKE 'pcs1.%' OR webhook_secret_sealed NOT LIKE 'pcs1.%'""",
    # An attempt goes to the account of its own merchant and connector (and its
    # follow-up calls with it): anything else would charge someone else's account.
    "attempt on another merchant's or connector's account": """
        SELECT a.id, a.merchant_id, a.connector, a.connector_account_id FROM payment_attempts a
        LEFT JOIN connector_accounts c ON c.id = a.connector_account_id
        WHERE a.connector_account_id IS NOT NULL
          AND (c.id IS NULL OR c.merchant_id <> a.merchant_id OR c.connector <> a.connector)""",
}


# The console's rollups (storage/rollups.py) against the event log they are folded from:
# for each merchant whose rollups include its whole log in this statement's snapshot,
# every rollup row equals a direct count of what the log shows — each payment in the status
# of its last event, each attempt as the last event that shows it (domain.rollups.merge),
# latency from the attempt's row. A difference is a fault of the fold (a count lost or
# doubled), whatever the order in which writers appended the events.
CHECKS["console rollups disagree with the event log they count"] = f"""
        WITH caught_up AS (SELECT c.merchant_id FROM stats_cursors c JOIN merchants m ON m.id = c.merchant_id
                           WHERE m.event_seq = c.seq),
        periods(period_s) AS (VALUES (0), (60), (3600)),
        last_payment AS (
            SELECT DISTINCT ON (e.merchant_id, e.object_id) e.merchant_id, e.data->>'status' AS status,
                   (e.data->>'created_at')::timestamptz AS created_at
            FROM events e JOIN caught_up USING (merchant_id) WHERE e.type LIKE 'payment.%'
            ORDER BY e.merchant_id, e.object_id, e.seq DESC),
        last_attempt AS (
            SELECT DISTINCT ON (e.merchant_id, attempt->>'id') e.merchant_id, attempt->>'id' AS id,
                   attempt->>'connector' AS connector, attempt->>'status' AS status,
                   (attempt->>'created_at')::timestamptz AS created_at
            FROM events e JOIN caught_up USING (merchant_id), jsonb_array_elements(e.data->'attempts') attempt
            WHERE e.type LIKE 'payment.%'
            ORDER BY e.merchant_id, attempt->>'id', e.seq DESC),
        counted AS (
            SELECT x.merchant_id, p.period_s,
                   CASE p.period_s WHEN 0 THEN 'epoch'::timestamptz
                        ELSE date_bin(make_interval(secs => p.period_s), x.created_at, 'epoch') END AS bucket,
                   x.dimension, x.connector, x.status, count(*) AS n
            FROM (SELECT merchant_id, created_at, 'payment' AS dimension, '' AS connector, status FROM last_payment
                  UNION ALL SELECT merchant_id, created_at, 'attempt', connector, status FROM last_attempt
                  UNION ALL SELECT l.merchant_id, l.created_at, 'latency', l.connector,
                         coalesce((SELECT min(b)::text FROM unnest({_LATENCY_BOUNDS}) b WHERE a.latency_ms <= b),
                                  '{latency.INF}')
                  FROM last_attempt l JOIN payment_attempts a ON a.id = l.id
                  WHERE l.status <> 'started' AND a.latency_ms >= 0) x, periods p
            GROUP BY 1, 2, 3, 4, 5, 6),
        folded AS (SELECT r.* FROM stats_rollups r JOIN caught_up USING (merchant_id) WHERE r.n <> 0)
        SELECT coalesce(c.merchant_id, f.merchant_id) AS merchant_id, coalesce(c.period_s, f.period_s) AS period_s,
               coalesce(c.bucket, f.bucket) AS bucket, coalesce(c.dimension, f.dimension) AS dimension,
               coalesce(c.connector, f.connector) AS connector, coalesce(c.status, f.status) AS status,
               c.n AS counted, f.n AS folded
        FROM counted c FULL JOIN folded f USING (merchant_id, period_s, bucket, dimension, connector, status)
        WHERE c.n IS DISTINCT FROM f.n"""


# What ``run.py check`` reports as ``warn`` without failing: a state the product passes
# through and leaves by itself, shown so an operator can see how much of it there is.
WARNINGS: dict[str, str] = {
    # A confirm's move to ``processing`` writes no event (the outcome's event makes it
    # visible), so until the connector answers, or reconciliation settles a payment whose
    # process died, the console counts it under its last evented status.
    "payments in processing that no event shows yet": """
        SELECT p.id, p.merchant_id, p.updated_at, last.status AS last_evented
        FROM payments p LEFT JOIN LATERAL (
            SELECT e.data->>'status' AS status FROM events e
            WHERE e.merchant_id = p.merchant_id AND e.object_id = p.id AND e.type LIKE 'payment.%'
            ORDER BY e.seq DESC LIMIT 1) last ON true
        WHERE p.status = 'processing' AND last.status IS DISTINCT FROM 'processing'""",
}


async def violations(conn: asyncpg.Connection, skip: Collection[str] = ()) -> dict[str, list[dict]]:
    """Every check and warning (but those named in ``skip``) with the rows that violate it (only
    those that found some)."""
    found: dict[str, list[dict]] = {}
    for name, sql in (CHECKS | WARNINGS).items():
        if name in skip:
            continue
        rows = await conn.fetch(sql)
        if rows:
            found[name] = [dict(r) for r in rows]
    return found
