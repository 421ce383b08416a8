-- Realtime gateway: per-client message log with gap-free seq, presence of live
-- WebSocket connections across processes.

-- One row per (merchant, client): the last seq handed out. Bumped in the
-- transaction that writes the messages, so seqs are gap-free per client and
-- concurrent writers for one client commit in seq order (the row lock is held
-- until commit).
CREATE TABLE realtime_clients (
    merchant_id  text NOT NULL REFERENCES merchants(id),
    client_id    text NOT NULL,
    last_seq     bigint NOT NULL CHECK (last_seq >= 0),
    PRIMARY KEY (merchant_id, client_id)
);

-- What each client was sent: committed events of its objects and published
-- messages. A connection resumes from here with after_seq.
CREATE TABLE realtime_messages (
    merchant_id  text NOT NULL,
    client_id    text NOT NULL,
    seq          bigint NOT NULL,
    topic        text NOT NULL,
    -- NULL: every device of the client; otherwise only that device's connections.
    device_id    text,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, client_id, seq)
);
CREATE INDEX realtime_messages_age ON realtime_messages (created_at);

-- Live connections, one row each, written by the process holding them
-- (node_id) and refreshed by it; rows of a process that died age out.
CREATE TABLE realtime_presence (
    connection_id  text PRIMARY KEY,
    node_id        text NOT NULL,
    merchant_id    text NOT NULL,
    client_id      text NOT NULL,
    device_id      text,
    connected_at   timestamptz NOT NULL DEFAULT now(),
    seen_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX realtime_presence_by_client ON realtime_presence (merchant_id, client_id);
CREATE INDEX realtime_presence_by_node ON realtime_presence (node_id);
