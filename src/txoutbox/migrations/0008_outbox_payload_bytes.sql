-- txoutbox 0008: the size of each payload as the relay sends it (its JSON text, in bytes), kept with the
-- row so that a claim can stop at a byte budget, and skip fetching a payload too large to ever be sent,
-- without reading (and de-TOASTing) the payloads themselves.
ALTER TABLE txoutbox.outbox
    ADD COLUMN payload_bytes integer GENERATED ALWAYS AS (octet_length(payload::text)) STORED;
