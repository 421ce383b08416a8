-- Gateway webhooks in: a durable inbox, stored before the 200 and applied exactly once.

CREATE TABLE webhook_inbox (
    id                text PRIMARY KEY,
    connector         text NOT NULL,
    event_id          text NOT NULL,
    kind              text NOT NULL,
    connector_txn_id  text NOT NULL,
    payment_id        text,
    object_id         text,
    merchant_id       text REFERENCES merchants(id),
    raw_body          text NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    -- pending → applied | ignored (late/duplicate outcome) | unmatched (kept for review) | unhandled
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'applied', 'ignored', 'unmatched', 'unhandled')),
    processed_at      timestamptz,
    -- A lease, not a lock: a process that dies mid-batch leaves rows that
    -- another process (or the restarted one) takes over when the lease ends.
    claimed_until     timestamptz,
    tries             integer NOT NULL DEFAULT 0,
    last_error        text,
    UNIQUE (connector, event_id)
);
CREATE INDEX webhook_inbox_pending ON webhook_inbox (id) WHERE processed_at IS NULL;
