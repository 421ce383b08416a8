-- A connector operation on an authorised payment (capture, void) is claimed in
-- the database before the connector is called, so two processes racing on one
-- payment never both reach the gateway. The claim lapses at operation_until
-- (longer than the connector timeout), so a process killed mid-call does not
-- hold the payment for ever.
ALTER TABLE payments
    ADD COLUMN operation text,
    ADD COLUMN operation_until timestamptz;
