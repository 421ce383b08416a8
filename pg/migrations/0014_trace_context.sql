-- OpenTelemetry: the W3C traceparent of the work that wrote a row, so the
-- asynchronous work it causes joins that trace (docs/api.md "Processes and transport", Tracing):
--   events.traceparent        → the outgoing webhook sends and realtime pushes of the event;
--   webhook_inbox.traceparent → the apply of a stored gateway webhook (and so the
--                               events it writes) continues the receiving request's trace.
-- NULL when the writer was not in a trace. Additive and nullable: old rows and
-- processes that do not write it keep working.
ALTER TABLE events ADD COLUMN traceparent text;
ALTER TABLE webhook_inbox ADD COLUMN traceparent text;
