-- txoutbox 0004: the trace context an event was written in, and the archive of published events.

-- W3C trace context (https://www.w3.org/TR/trace-context/) of the writer's span, when OpenTelemetry is in
-- use: the relay's send span and the consumer's process span continue this trace. NULL otherwise. Dead
-- letters keep it, so a retried dead letter still belongs to its trace.
ALTER TABLE txoutbox.outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
ALTER TABLE txoutbox.dead_letters ADD COLUMN traceparent text, ADD COLUMN tracestate text;

-- Published events, kept for TXOUTBOX_RETENTION_DAYS (0, the default: not kept) for `txoutbox published
-- list` and `txoutbox replay`. The relay's acknowledgement moves a published row here in the statement
-- that deletes it from the outbox. One partition per UTC day of publication, created days ahead and
-- dropped whole when it expires (`txoutbox retention`, or the relay's hourly side job): expiry never
-- deletes row by row, so it leaves no dead tuples and no vacuum debt.
CREATE TABLE txoutbox.published (
    id             bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL,
    published_at   timestamptz NOT NULL DEFAULT now(),
    traceparent    text,
    tracestate     text
) PARTITION BY RANGE (published_at);

-- Replay reads an aggregate's events in id order; listing filters by the event's time.
CREATE INDEX published_aggregate_idx ON txoutbox.published (aggregate_type, aggregate_id, id);
CREATE INDEX published_created_idx ON txoutbox.published (created_at);
CREATE INDEX published_id_idx ON txoutbox.published (id);

-- A safety net: if no daily partition exists yet (the side job has not run for days), the acknowledgement
-- still succeeds; `txoutbox retention` reports rows found here.
CREATE TABLE txoutbox.published_default PARTITION OF txoutbox.published DEFAULT;
