-- The amount a real connector's event names (a dispute's amount: Stripe and
-- Razorpay dispute part of a charge), kept with the event so its apply does not
-- parse the raw body again with a parser that needs the request's headers.
ALTER TABLE webhook_inbox ADD COLUMN amount bigint;
