-- The reference service's own schema (its own database; see bench/reference/app.py).
-- The same rows as Paycast's hot path: a payment, its attempts, a per-merchant
-- gap-free event log, idempotency keys, and the gateway webhook inbox unique on
-- connector + event id. Idempotent: applied at every start.

CREATE TABLE IF NOT EXISTS merchants (
    id            text PRIMARY KEY,
    api_key_hash  text NOT NULL UNIQUE,
    -- Last event seq handed out; bumped in the transaction that writes the event.
    event_seq     bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS payments (
    id                 text PRIMARY KEY,
    merchant_id        text NOT NULL REFERENCES merchants(id),
    amount             bigint NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    status             text NOT NULL,
    capture_method     text NOT NULL,
    payment_method     jsonb NOT NULL,
    customer_id        text,
    connector          text,
    amount_received    bigint NOT NULL DEFAULT 0,
    amount_capturable  bigint NOT NULL DEFAULT 0,
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_by_merchant ON payments (merchant_id, id DESC);

CREATE TABLE IF NOT EXISTS payment_attempts (
    id                text PRIMARY KEY,
    payment_id        text NOT NULL REFERENCES payments(id),
    merchant_id       text NOT NULL,
    connector         text NOT NULL,
    status            text NOT NULL,
    connector_txn_id  text,
    error_code        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS attempts_by_payment ON payment_attempts (payment_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_one_success ON payment_attempts (payment_id)
    WHERE status IN ('succeeded', 'authorized');

CREATE TABLE IF NOT EXISTS events (
    id           text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants(id),
    seq          bigint NOT NULL,
    type         text NOT NULL,
    object_id    text NOT NULL,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, seq)
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    merchant_id      text NOT NULL REFERENCES merchants(id),
    key              text NOT NULL,
    request_hash     text NOT NULL,
    response_status  integer,  -- NULL: in flight
    response_body    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);

CREATE TABLE IF NOT EXISTS webhook_inbox (
    id           text PRIMARY KEY,
    connector    text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,  -- set when the request applied it (``?apply=1``)
    UNIQUE (connector, event_id)
);
