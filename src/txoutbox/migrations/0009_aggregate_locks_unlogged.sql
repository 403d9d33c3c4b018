-- txoutbox 0009: the per-aggregate lock rows stay behind and are not WAL-logged.
-- A writer no longer deletes its lock rows in a second statement: it takes the row (inserting it, or
-- locking the one left behind by `ON CONFLICT ... DO UPDATE ... WHERE false`) in the statement that inserts
-- its events, and the row lock ends with its transaction as before. Relays prune rows nobody holds, in
-- batches, with their heartbeat (queries.AGGREGATE_LOCKS_PRUNE). The rows carry nothing worth keeping
-- across a crash (the locks die with the server anyway), so the table is UNLOGGED: a crash empties it,
-- and its inserts and deletes write no WAL.
ALTER TABLE txoutbox.aggregate_locks SET UNLOGGED;
