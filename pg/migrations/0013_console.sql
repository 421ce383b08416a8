-- Operator console: how long each connector call took, and the
-- indexes its read endpoints need (per-minute stats over the last hour,
-- search by customer and by connector transaction id).

-- Wall-clock milliseconds of the connector call that settled this attempt;
-- NULL for attempts settled before this column existed or settled only by a
-- webhook/reconciliation (no call of ours to time).
ALTER TABLE payment_attempts ADD COLUMN latency_ms double precision;

CREATE INDEX IF NOT EXISTS payments_by_merchant_created ON payments (merchant_id, created_at);
CREATE INDEX IF NOT EXISTS payments_by_customer ON payments (merchant_id, customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS attempts_by_merchant_created ON payment_attempts (merchant_id, created_at);
CREATE INDEX IF NOT EXISTS attempts_by_txn_id ON payment_attempts (connector_txn_id)
    WHERE connector_txn_id IS NOT NULL;
