-- Settlement reports compared against our attempts (POST /v1/reconciliation/reports).

CREATE TABLE reconciliation_reports (
    id                  text PRIMARY KEY,
    merchant_id         text NOT NULL REFERENCES merchants(id),
    connector           text NOT NULL,
    matched             integer NOT NULL,
    mismatched          jsonb NOT NULL,
    missing_in_paycast  jsonb NOT NULL,
    missing_in_report   jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
