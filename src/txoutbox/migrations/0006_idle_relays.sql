-- txoutbox 0006: relays waiting for work announce it, so writers NOTIFY only while one waits; and the
-- counter behind the claim's low-water mark.
-- A NOTIFY takes a global lock at commit (it costs writers about 30 % at full load). A relay with work
-- polls on its own; only once it has found nothing for a while does it add its row here and rely on
-- LISTEN (plus a slow fallback poll). Writers look for a current row and notify only then, so a busy
-- system pays no NOTIFY at all. A row whose relay died expires by `until`; it only ever costs a NOTIFY.
CREATE TABLE txoutbox.idle_relays (
    relay_id text        PRIMARY KEY,
    until    timestamptz NOT NULL
);

-- Bumped whenever events go back into the outbox under their old ids (dead letters retried): relays then
-- scan the whole outbox again until they have seen them (the claim's low-water mark, txoutbox.relay.store).
-- A row, not a sequence: a sequence's bump is seen before the transaction that re-inserts commits (and a
-- fresh sequence's first nextval leaves last_value unchanged); this one is seen together with the events.
CREATE TABLE txoutbox.outbox_reinserts (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    n         bigint  NOT NULL DEFAULT 0
);
INSERT INTO txoutbox.outbox_reinserts DEFAULT VALUES;
