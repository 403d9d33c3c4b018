-- txoutbox 0005: per-aggregate write locks as rows (not hashed advisory-lock buckets), and the inbox by age.
-- A writer inserts one row per aggregate it writes (sorted) before the outbox ids are drawn, and deletes
-- the rows again in the same transaction: a second writer of the same aggregate waits on the first's
-- uncommitted row until it commits or rolls back; writers of different aggregates never touch the same row.
-- Row locks live in the rows themselves, not in PostgreSQL's finite lock table, so a bulk write of any
-- number of aggregates takes them all. Committed, the table is empty (only dead tuples for vacuum).
CREATE TABLE txoutbox.aggregate_locks (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01);

-- The consumer prunes its inbox by age, a small batch at a time (txoutbox.inbox_pruner): oldest first.
CREATE INDEX inbox_processed_idx ON txoutbox.inbox (consumer, processed_at);
