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
--
-- The new tables are made LIKE the old ones (every column, default, NOT NULL
-- and CHECK, including columns other migrations added before this one);
-- keys, indexes and foreign keys are made again below. CASCADE on dropping
-- the old events table removes the foreign key of webhook_deliveries.event_id
-- (whatever its name): a delivery outlives its event's partition only when
-- PAYCAST_RETENTION_EVENTS_DAYS is set, and is then canceled.

-- Copying a large table takes longer than the server's statement timeout.
SET LOCAL statement_timeout = 0;

-- The old table's non-unique indexes (whoever made them) are made again on the
-- new one; unique ones cannot be (they lack the partition key) and are
-- replaced below.
CREATE FUNCTION pg_temp.copy_indexes(old_table text, new_table text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT schemaname, indexname, indexdef FROM pg_indexes
             WHERE tablename = old_table AND indexdef NOT LIKE 'CREATE UNIQUE INDEX%' LOOP
        EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', r.schemaname, r.indexname, left(r.indexname, 50) || '_old');
        EXECUTE replace(r.indexdef, format(' ON %s.%s ', r.schemaname, old_table), format(' ON %s ', new_table));
    END LOOP;
END $$;

-- ---------------------------------------------------------------- events
ALTER TABLE events RENAME TO events_unpartitioned;
CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
INSERT INTO events SELECT * FROM events_unpartitioned;
SELECT pg_temp.copy_indexes('events_unpartitioned', 'events');
DROP TABLE events_unpartitioned CASCADE;
ALTER TABLE events ADD PRIMARY KEY (id, created_at);
ALTER TABLE events ADD CONSTRAINT events_merchant_seq UNIQUE (merchant_id, seq, created_at);
ALTER TABLE events ADD FOREIGN KEY (merchant_id) REFERENCES merchants(id);
-- Lookups by id and by (merchant, seq) use the two indexes above (leading columns).

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
CREATE TABLE webhook_inbox (LIKE webhook_inbox_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (received_at);
CREATE TABLE webhook_inbox_default PARTITION OF webhook_inbox DEFAULT;
INSERT INTO webhook_inbox SELECT * FROM webhook_inbox_unpartitioned;
SELECT pg_temp.copy_indexes('webhook_inbox_unpartitioned', 'webhook_inbox');
DROP TABLE webhook_inbox_unpartitioned;
ALTER TABLE webhook_inbox ADD PRIMARY KEY (id, received_at);
ALTER TABLE webhook_inbox ADD FOREIGN KEY (merchant_id) REFERENCES merchants(id);

-- ---------------------------------------------------------------- realtime messages
ALTER TABLE realtime_messages RENAME TO realtime_messages_unpartitioned;
CREATE TABLE realtime_messages (LIKE realtime_messages_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
CREATE TABLE realtime_messages_default PARTITION OF realtime_messages DEFAULT;
INSERT INTO realtime_messages SELECT * FROM realtime_messages_unpartitioned;
SELECT pg_temp.copy_indexes('realtime_messages_unpartitioned', 'realtime_messages');
DROP TABLE realtime_messages_unpartitioned;
-- It served the DELETE of old messages; partitions are dropped instead.
DROP INDEX IF EXISTS realtime_messages_age;
ALTER TABLE realtime_messages ADD PRIMARY KEY (merchant_id, client_id, seq, created_at);

-- ---------------------------------------------------------------- delivery attempts
-- The id from a plain sequence rather than an identity column: PostgreSQL < 17
-- has no identity columns on partitioned tables.
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_unpartitioned;
CREATE SEQUENCE webhook_attempt_ids;
SELECT setval('webhook_attempt_ids', coalesce((SELECT max(id) FROM webhook_attempts_unpartitioned), 0) + 1, false);
CREATE TABLE webhook_attempts (LIKE webhook_attempts_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE webhook_attempts ALTER COLUMN id SET DEFAULT nextval('webhook_attempt_ids');
ALTER SEQUENCE webhook_attempt_ids OWNED BY webhook_attempts.id;
CREATE TABLE webhook_attempts_default PARTITION OF webhook_attempts DEFAULT;
INSERT INTO webhook_attempts SELECT * FROM webhook_attempts_unpartitioned;
SELECT pg_temp.copy_indexes('webhook_attempts_unpartitioned', 'webhook_attempts');
DROP TABLE webhook_attempts_unpartitioned;
ALTER TABLE webhook_attempts ADD PRIMARY KEY (id, created_at);
ALTER TABLE webhook_attempts ADD FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries(id);
