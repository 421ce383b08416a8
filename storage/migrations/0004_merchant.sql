-- Merchant features: refunds, disputes, wallet accounts with a double-entry
-- ledger, outgoing webhook endpoints and their deliveries.

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

-- Wallets. A wallet has no balance column: its balances are sums of its
-- ledger entries (see ledger_entries).
CREATE TABLE accounts (
    id           text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants(id),
    customer_id  text NOT NULL,
    currency     text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_by_merchant ON accounts (merchant_id, id DESC);

CREATE TABLE account_transactions (
    id                   text PRIMARY KEY,
    merchant_id          text NOT NULL REFERENCES merchants(id),
    account_id           text NOT NULL REFERENCES accounts(id),
    type                 text NOT NULL CHECK (type IN ('deposit', 'withdrawal')),
    status               text NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    amount               bigint NOT NULL CHECK (amount > 0),
    currency             text NOT NULL,
    payment_id           text REFERENCES payments(id),
    connector            text,
    connector_payout_id  text,
    failure_code         text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'deposit') = (payment_id IS NOT NULL))
);
CREATE INDEX account_transactions_by_merchant ON account_transactions (merchant_id, id DESC);
CREATE INDEX account_transactions_by_account ON account_transactions (account_id, id DESC);
CREATE UNIQUE INDEX account_transactions_by_payment ON account_transactions (payment_id)
    WHERE payment_id IS NOT NULL;

-- The double-entry ledger. Every movement of a transaction is two rows whose
-- amounts sum to zero; (transaction, movement, book) is unique, so a movement
-- (e.g. "credit this deposit") can be written once and only once whatever
-- the application does. Rows are never updated or deleted (trigger below).
CREATE TABLE ledger_entries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     text NOT NULL REFERENCES merchants(id),
    transaction_id  text NOT NULL REFERENCES account_transactions(id),
    movement        text NOT NULL CHECK (movement IN ('deposit', 'reserve', 'payout', 'release')),
    -- NULL account: the outside world (money in from a payment, out by a payout).
    account_id      text REFERENCES accounts(id),
    book            text NOT NULL CHECK (book IN ('available', 'reserved', 'external')),
    currency        text NOT NULL,
    amount          bigint NOT NULL CHECK (amount <> 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((book = 'external') = (account_id IS NULL)),
    UNIQUE (transaction_id, movement, book)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, book) WHERE account_id IS NOT NULL;

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE webhook_endpoints (
    id               text PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants(id),
    url              text NOT NULL,
    secret           text NOT NULL,
    enabled_events   text[] NOT NULL,
    description      text,
    status           text NOT NULL CHECK (status IN ('enabled', 'disabled')),
    disabled_reason  text,
    deleted_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id, id DESC);
CREATE INDEX webhook_endpoints_enabled ON webhook_endpoints (merchant_id)
    WHERE status = 'enabled' AND deleted_at IS NULL;

-- One row per (endpoint, event): written in the transaction that writes the
-- event, so a committed event always has its deliveries and they survive
-- restarts. The dispatcher claims due rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants(id),
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints(id),
    event_id         text NOT NULL REFERENCES events(id),
    event_type       text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempt_count    integer NOT NULL DEFAULT 0,
    -- Automatic attempts allowed (the retry schedule's length); a manual retry
    -- allows one more.
    max_attempts     integer NOT NULL,
    next_attempt_at  timestamptz,
    claimed_until    timestamptz,
    claim_token      text,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  text NOT NULL REFERENCES webhook_deliveries(id),
    attempt      integer NOT NULL,
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
