-- Merchants' own gateway accounts (real connectors: stripe, razorpay).
--
-- Credentials and the webhook secret are stored sealed (storage/secrets_box.py:
-- AES-256-GCM, "pcs1.<key id>.<base64url>"); what reads show is the mask,
-- computed when the credentials are set and stored beside them. `version`
-- grows with every credentials change, so a process's cached connector object
-- for the account is rebuilt after a rotation made by any process.
--
-- Outgoing endpoint secrets (webhook_endpoints.secret) keep their column: the
-- start-up step storage.secrets_box.prepare seals what is still plaintext
-- there (the data migration), and every read opens it.

CREATE TABLE connector_accounts (
    id                     text PRIMARY KEY,
    merchant_id            text NOT NULL REFERENCES merchants(id),
    connector              text NOT NULL CHECK (connector IN ('stripe', 'razorpay')),
    label                  text,
    status                 text NOT NULL CHECK (status IN ('active', 'disabled')),
    livemode               boolean NOT NULL,
    credentials_sealed     text NOT NULL,
    webhook_secret_sealed  text NOT NULL,
    credentials_mask       jsonb NOT NULL,
    version                integer NOT NULL DEFAULT 1,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    disabled_at            timestamptz
);
-- One active account per merchant and connector (a second → 409 connector_account_exists).
CREATE UNIQUE INDEX connector_accounts_one_active ON connector_accounts (merchant_id, connector)
    WHERE status = 'active';
CREATE INDEX connector_accounts_by_merchant ON connector_accounts (merchant_id, id DESC);
