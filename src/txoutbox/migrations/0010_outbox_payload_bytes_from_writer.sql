-- txoutbox 0010: the writer states each payload's size; the server no longer computes it.
-- The generated column of 0008 turned every inserted jsonb back into text (octet_length(payload::text)),
-- about a third of the outbox's cost per booking on the database. The writer has the payload's JSON text
-- in hand and passes its length (queries.INSERT_EVENTS). The size stays an estimate of what the relay
-- sends (jsonb's text adds a space after each ':' and ','): the claim's byte budget and its
-- "too large to fetch" test use it, and the publisher checks every message's exact size before sending.
-- Rows inserted without it (plain SQL, older writers) are measured by the claim itself (queries.CLAIM).
ALTER TABLE txoutbox.outbox ALTER COLUMN payload_bytes DROP EXPRESSION;
