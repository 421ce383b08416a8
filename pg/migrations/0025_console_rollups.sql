-- Reads that cost the same at ten million payments as at ten.
--
-- stats_rollups: counts folded from the event log by actor:rollups (worker
-- role), per merchant and period bucket: payments by current status,
-- attempts by connector and status, timed attempts by latency bucket
-- (domain/rollups.py). Only that actor writes them, in batches, so no payment
-- transaction touches them: no hot row on the payment write path.
-- stats_cursors: the last event seq each merchant's rollups include; the fold
-- and the cursor move in one transaction, so catching up after a stop is
-- exact. A merchant without a cursor row gets its rollups rebuilt from seq 0.

CREATE TABLE stats_rollups (
    merchant_id  text NOT NULL REFERENCES merchants(id),
    period_s     integer NOT NULL CHECK (period_s IN (0, 60, 3600)),  -- 0: all time
    bucket       timestamptz NOT NULL,
    dimension    text NOT NULL CHECK (dimension IN ('payment', 'attempt', 'latency')),
    connector    text NOT NULL,   -- '' for payments
    status       text NOT NULL,   -- a payment or attempt status; a latency bucket label for latency
    n            bigint NOT NULL,
    PRIMARY KEY (merchant_id, period_s, bucket, dimension, connector, status)
);

CREATE TABLE stats_cursors (
    merchant_id  text PRIMARY KEY REFERENCES merchants(id),
    seq          bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The overview's other counters, each an index-only count of the rows it
-- names (a few, whatever the number of payments stored).
CREATE INDEX payments_processing_by_merchant ON payments (merchant_id, processing_deadline)
    WHERE status = 'processing';
CREATE INDEX payments_review_required ON payments (merchant_id, id DESC) WHERE review_required;
CREATE INDEX webhook_deliveries_failing ON webhook_deliveries (merchant_id, id DESC)
    WHERE status = 'failed' OR (status = 'pending' AND attempt_count > 0);

-- Search: newest first by customer or order without sorting all of them.
CREATE INDEX payments_by_customer_newest ON payments (merchant_id, customer_id, id DESC)
    WHERE customer_id IS NOT NULL;
DROP INDEX IF EXISTS payments_by_customer;
CREATE INDEX payments_by_merchant_order ON payments (merchant_id, order_id, id DESC) WHERE order_id IS NOT NULL;
CREATE INDEX attempts_by_merchant_txn ON payment_attempts (merchant_id, connector_txn_id)
    WHERE connector_txn_id IS NOT NULL;
