-- Bounded tables: the event log, the gateway webhook inbox, realtime messages
-- and outgoing delivery attempts become partitioned by time (declarative
-- range partitioning), so old rows go by dropping a partition instead of by
-- DELETE. Each table gets a DEFAULT partition here, holding every existing
-- row; the maintenance actor (actors/maintenance.py, worker role) then makes
-- the period partitions — moving rows out of the default one — and drops
-- those past their retention (storage/partitions.py).
--
-- A unique index of a partitioned table must contain the partition key, so
-- the uniqueness the contract relies on is kept like this:
--   * event ids and inbox ids: primary key (id, time). Ids are 48 bits of
--     milliseconds + 80 random bits (domain/ids.py); the index enforces them
--     within a partition, and a clash across partitions would need two ids of
--     different milliseconds to be equal, which their first 10 characters
--     (the milliseconds) rule out.
--   * per-merchant event seq: merchants.event_seq is a counter bumped by the
--     appending statement under the merchant's row lock, so each value is
--     handed out once; (merchant_id, seq, created_at) is unique per partition.
--   * per-client realtime seq: realtime_clients.last_seq, the same way.
--   * connector event ids (the inbox's dedup): a separate, unpartitioned key
--     table webhook_inbox_keys with primary key (connector, event_id); the
--     inbox insert goes through it, and its rows are deleted after the
--     inbox's retention, which is therefore the dedup window.

-- ---------------------------------------------------------------- events
ALTER TABLE webhook_deliveries DROP CONSTRAINT IF EXISTS webhook_deliveries_event_id_fkey;
ALTER TABLE events RENAME TO events_unpartitioned;
CREATE TABLE events (
    id           text NOT NULL,
    merchant_id  text NOT NULL REFERENCES merchants(id),
    seq          bigint NOT NULL,
    type         text NOT NULL,
    object_id    text NOT NULL,
    customer_id  text,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
INSERT INTO events (id, merchant_id, seq, type, object_id, customer_id, data, created_at)
    SELECT id, merchant_id, seq, type, object_id, customer_id, data, created_at FROM events_unpartitioned;
DROP TABLE events_unpartitioned;
ALTER TABLE events ADD PRIMARY KEY (id, created_at);
ALTER TABLE events ADD CONSTRAINT events_merchant_seq UNIQUE (merchant_id, seq, created_at);
-- Lookups by id and by (merchant, seq) use these two indexes' leading columns.
CREATE INDEX events_by_object ON events (merchant_id, object_id, seq);
CREATE INDEX events_by_type ON events (merchant_id, type, seq);

-- ---------------------------------------------------------------- webhook inbox
CREATE TABLE webhook_inbox_keys (
    connector    text NOT NULL,
    event_id     text NOT NULL,
    inbox_id     text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, event_id)
);
CREATE INDEX webhook_inbox_keys_age ON webhook_inbox_keys (received_at);
INSERT INTO webhook_inbox_keys (connector, event_id, inbox_id, received_at)
    SELECT connector, event_id, id, received_at FROM webhook_inbox;

ALTER TABLE webhook_inbox RENAME TO webhook_inbox_unpartitioned;
CREATE TABLE webhook_inbox (
    id                text NOT NULL,
    connector         text NOT NULL,
    event_id          text NOT NULL,
    kind              text NOT NULL,
    connector_txn_id  text NOT NULL,
    payment_id        text,
    object_id         text,
    merchant_id       text REFERENCES merchants(id),
    raw_body          text NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'applied', 'ignored', 'unmatched', 'unhandled')),
    processed_at      timestamptz,
    claimed_until     timestamptz,
    tries             integer NOT NULL DEFAULT 0,
    last_error        text
) PARTITION BY RANGE (received_at);
CREATE TABLE webhook_inbox_default PARTITION OF webhook_inbox DEFAULT;
INSERT INTO webhook_inbox SELECT id, connector, event_id, kind, connector_txn_id, payment_id, object_id, merchant_id,
    raw_body, received_at, status, processed_at, claimed_until, tries, last_error FROM webhook_inbox_unpartitioned;
DROP TABLE webhook_inbox_unpartitioned;
ALTER TABLE webhook_inbox ADD PRIMARY KEY (id, received_at);
CREATE INDEX webhook_inbox_pending ON webhook_inbox (id) WHERE processed_at IS NULL;

-- ---------------------------------------------------------------- realtime messages
ALTER TABLE realtime_messages RENAME TO realtime_messages_unpartitioned;
CREATE TABLE realtime_messages (
    merchant_id  text NOT NULL,
    client_id    text NOT NULL,
    seq          bigint NOT NULL,
    topic        text NOT NULL,
    device_id    text,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);
CREATE TABLE realtime_messages_default PARTITION OF realtime_messages DEFAULT;
INSERT INTO realtime_messages SELECT merchant_id, client_id, seq, topic, device_id, payload, created_at
    FROM realtime_messages_unpartitioned;
DROP TABLE realtime_messages_unpartitioned;
ALTER TABLE realtime_messages ADD PRIMARY KEY (merchant_id, client_id, seq, created_at);

-- ---------------------------------------------------------------- delivery attempts
-- A plain sequence rather than an identity column: PostgreSQL < 17 has no
-- identity columns on partitioned tables.
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_unpartitioned;
CREATE SEQUENCE webhook_attempt_ids;
SELECT setval('webhook_attempt_ids', coalesce((SELECT max(id) FROM webhook_attempts_unpartitioned), 0) + 1, false);
CREATE TABLE webhook_attempts (
    id           bigint NOT NULL DEFAULT nextval('webhook_attempt_ids'),
    delivery_id  text NOT NULL REFERENCES webhook_deliveries(id),
    attempt      integer NOT NULL,
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE webhook_attempt_ids OWNED BY webhook_attempts.id;
CREATE TABLE webhook_attempts_default PARTITION OF webhook_attempts DEFAULT;
INSERT INTO webhook_attempts SELECT id, delivery_id, attempt, status_code, latency_ms, error, created_at
    FROM webhook_attempts_unpartitioned;
DROP TABLE webhook_attempts_unpartitioned;
ALTER TABLE webhook_attempts ADD PRIMARY KEY (id, created_at);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
