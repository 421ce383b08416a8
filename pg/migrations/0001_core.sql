-- Core schema: merchants, orders, payments and their attempts, the event log,
-- idempotency keys. Invariants that can live in the database do (CHECKs and a
-- partial unique index for "at most one successful charge per payment").

CREATE TABLE merchants (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    api_key_hash  text NOT NULL UNIQUE,
    -- Last event seq handed out; bumped in the transaction that writes the event,
    -- so seqs are gap-free per merchant (a rolled-back bump is rolled back too).
    event_seq     bigint NOT NULL DEFAULT 0,
    routing       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id               text PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants(id),
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL,
    customer_id      text,
    status           text NOT NULL CHECK (status IN ('created', 'paid', 'payment_failed', 'refunded')),
    metadata         jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_merchant ON orders (merchant_id, id DESC);

CREATE TABLE payments (
    id                   text PRIMARY KEY,
    merchant_id          text NOT NULL REFERENCES merchants(id),
    order_id             text REFERENCES orders(id),
    customer_id          text,
    amount               bigint NOT NULL CHECK (amount > 0),
    currency             text NOT NULL,
    status               text NOT NULL CHECK (status IN ('requires_confirmation', 'processing',
                             'requires_capture', 'succeeded', 'failed', 'canceled')),
    capture_method       text NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    payment_method       jsonb NOT NULL,
    connector            text,
    pinned_connector     text,
    amount_capturable    bigint NOT NULL DEFAULT 0 CHECK (amount_capturable >= 0),
    amount_received      bigint NOT NULL DEFAULT 0 CHECK (amount_received >= 0),
    amount_refunded      bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    last_error           jsonb,
    review_required      boolean NOT NULL DEFAULT false,
    processing_deadline  timestamptz,
    reconcile_checks     integer NOT NULL DEFAULT 0,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (amount_received <= amount),
    CHECK (amount_capturable <= amount),
    CHECK (amount_refunded <= amount_received)
);
CREATE INDEX payments_by_merchant ON payments (merchant_id, id DESC);
CREATE INDEX payments_by_order ON payments (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX payments_processing ON payments (processing_deadline) WHERE status = 'processing';

CREATE TABLE payment_attempts (
    id                text PRIMARY KEY,
    payment_id        text NOT NULL REFERENCES payments(id),
    merchant_id       text NOT NULL REFERENCES merchants(id),
    connector         text NOT NULL,
    status            text NOT NULL CHECK (status IN ('started', 'succeeded', 'failed', 'unknown', 'authorized')),
    connector_txn_id  text,
    error_code        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_by_payment ON payment_attempts (payment_id, id);
-- The money invariant "no payment has more than one successful charge", enforced
-- by the database whatever the application does.
CREATE UNIQUE INDEX attempts_one_success ON payment_attempts (payment_id)
    WHERE status IN ('succeeded', 'authorized');
CREATE UNIQUE INDEX attempts_by_txn ON payment_attempts (connector, connector_txn_id)
    WHERE connector_txn_id IS NOT NULL;

CREATE TABLE events (
    id           text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants(id),
    seq          bigint NOT NULL,
    type         text NOT NULL,
    object_id    text NOT NULL,
    customer_id  text,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, seq)
);
CREATE INDEX events_by_object ON events (merchant_id, object_id, seq);
CREATE INDEX events_by_type ON events (merchant_id, type, seq);

CREATE TABLE idempotency_keys (
    merchant_id      text NOT NULL REFERENCES merchants(id),
    key              text NOT NULL,
    request_hash     text NOT NULL,
    -- NULL response_status means "in flight"; locked_until lets a key whose
    -- process died mid-request be taken over instead of staying 409 forever.
    response_status  integer,
    response_body    text,
    locked_until     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
