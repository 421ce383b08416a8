-- Outgoing webhooks: merchants' endpoints, one delivery row per (endpoint, event), attempts.

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
