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
CREATE SEQUENCE txoutbox.outbox_reinserts;
