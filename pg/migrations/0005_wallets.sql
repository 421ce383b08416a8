-- Wallet accounts, their transactions, and the double-entry ledger their balances are sums of.

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
