-- v1.2: a payment may wait for its customer (3-D Secure, a gateway's checkout).
--
-- payments: status requires_action; next_action (the contract's object, set only
-- while requires_action); cancellation_reason ("abandoned" when the action
-- deadline ended it); return_url (where a 3-D Secure redirect comes back, given
-- on confirm); action_deadline (confirm time + PAYCAST_ACTION_DEADLINE_S: past
-- it, a payment still in requires_action is asked at the gateway and canceled
-- there if still waiting; the reconciler leases it by pushing it forward).
-- payment_attempts: the connector account (mca_…) that made the attempt, so
-- capture, cancel, refunds and reconciliation go to the account that charged
-- (NULL for the simulators).
-- webhook_inbox: what a real connector's event says beyond the older columns
-- (the account whose path received it, the gateway's id of the payment a
-- refund or dispute belongs to, a failed try's code and message, the card's
-- brand and last 4).

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('requires_confirmation', 'processing',
    'requires_action', 'requires_capture', 'succeeded', 'failed', 'canceled'));
ALTER TABLE payments
    ADD COLUMN next_action jsonb,
    ADD COLUMN cancellation_reason text,
    ADD COLUMN return_url text,
    ADD COLUMN action_deadline timestamptz,
    ADD CONSTRAINT payments_next_action_only_when_waiting CHECK (next_action IS NULL OR status = 'requires_action');
CREATE INDEX payments_requires_action ON payments (action_deadline) WHERE status = 'requires_action';

ALTER TABLE payment_attempts ADD COLUMN connector_account_id text;

ALTER TABLE webhook_inbox
    ADD COLUMN account_id text,
    ADD COLUMN payment_txn_id text,
    ADD COLUMN error_code text,
    ADD COLUMN message text,
    ADD COLUMN method_details jsonb;
