-- Refunds and withdrawals (payouts) still pending past PAYCAST_PROCESSING_DEADLINE_S
-- are reconciled like payments: the connector is asked with backoff, and after
-- PAYCAST_RECONCILE_MAX_CHECKS they are flagged review_required (docs/api.md v1.1).
-- reconcile_after NULL means "created_at + the deadline" (rows older than this migration included).
ALTER TABLE refunds ADD COLUMN review_required boolean NOT NULL DEFAULT false;
ALTER TABLE refunds ADD COLUMN reconcile_checks integer NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN reconcile_after timestamptz;
CREATE INDEX refunds_reconcile_due ON refunds (created_at) WHERE status = 'pending' AND NOT review_required;

ALTER TABLE account_transactions ADD COLUMN review_required boolean NOT NULL DEFAULT false;
ALTER TABLE account_transactions ADD COLUMN reconcile_checks integer NOT NULL DEFAULT 0;
ALTER TABLE account_transactions ADD COLUMN reconcile_after timestamptz;
CREATE INDEX account_transactions_reconcile_due ON account_transactions (created_at)
    WHERE status = 'pending' AND type = 'withdrawal' AND NOT review_required;
