-- Realtime devices: what lasts about a (client, device) beyond its connections.
--
-- acked_seq: the highest seq the device acknowledged (written in batches by
-- each process's device writer, never once per ack; it only grows).
-- not_before_ms: tokens for this device issued before this instant (unix ms)
-- are refused at the handshake; set when the device is deleted (revoked).
-- last_seen_at: last connect, disconnect or ack flush; NULL after a delete
-- until the device connects again (the device list shows only seen devices).
CREATE TABLE realtime_devices (
    merchant_id    text NOT NULL,
    client_id      text NOT NULL,
    device_id      text NOT NULL,
    acked_seq      bigint NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    last_seen_at   timestamptz,
    not_before_ms  bigint,
    PRIMARY KEY (merchant_id, client_id, device_id)
);
