-- Process-wide secrets (a global table, not a merchant's).

-- Secrets every process on this database must agree on (the realtime token
-- key when PAYCAST_REALTIME_SECRET is unset). Created on first use.
CREATE TABLE paycast_secrets (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
