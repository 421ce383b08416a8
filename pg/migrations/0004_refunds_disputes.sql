-- Refunds (reserved against their payment) and disputes (opened by gateway webhooks).

CREATE TABLE refunds (
    id                   text PRIMARY KEY,
    merchant_id          text NOT NULL REFERENCES merchants(id),
    payment_id           text NOT NULL REFERENCES payments(id),
    amount               bigint NOT NULL CHECK (amount > 0),
    currency             text NOT NULL,
    reason               text,
    status               text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    connector            text NOT NULL,
    connector_refund_id  text,
    failure_code         text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_merchant ON refunds (merchant_id, id DESC);
CREATE INDEX refunds_by_payment ON refunds (payment_id, id);

CREATE TABLE disputes (
    id                    text PRIMARY KEY,
    merchant_id           text NOT NULL REFERENCES merchants(id),
    payment_id            text NOT NULL REFERENCES payments(id),
    amount                bigint NOT NULL CHECK (amount > 0),
    currency              text NOT NULL,
    status                text NOT NULL CHECK (status IN ('needs_response', 'under_review', 'won', 'lost',
                                                           'accepted')),
    reason                text,
    connector             text NOT NULL,
    connector_dispute_id  text NOT NULL,
    evidence              text,
    evidence_submitted_at timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- A connector's dispute opens one dispute here, however often its webhook comes.
    UNIQUE (connector, connector_dispute_id)
);
CREATE INDEX disputes_by_merchant ON disputes (merchant_id, id DESC);
CREATE INDEX disputes_by_payment ON disputes (payment_id);
