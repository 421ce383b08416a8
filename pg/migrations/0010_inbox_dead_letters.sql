-- Incoming webhook inbox: dead letters (docs/api.md v1.1 "Incoming webhook inbox").
-- An apply that fails is retried per PAYCAST_INBOX_RETRY_SCHEDULE; `failures`
-- counts those failures (not the grace-period retries of a webhook that
-- overtook its payment) and picks the next delay; when the schedule is spent
-- the row is `dead` (processed_at set, so it leaves the pending index) until
-- an operator replays it.
ALTER TABLE webhook_inbox ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_status_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
    CHECK (status IN ('pending', 'applied', 'ignored', 'unmatched', 'unhandled', 'dead'));
-- The admin list: newest first, optionally by status and/or connector.
CREATE INDEX webhook_inbox_admin_list ON webhook_inbox (received_at DESC, id DESC);
CREATE INDEX webhook_inbox_by_status ON webhook_inbox (status, received_at DESC, id DESC);
