-- txoutbox 0003: each relay reports how many events it has published since it started, with its heartbeat,
-- so the operator console (`txoutbox console`) can chart the publish rate of all relays from the database
-- alone: the rate is the growth of these counters between two looks, summed over relays. A counter per relay
-- row, written only by that relay's heartbeat, adds no write to the publish path and no contended row.
ALTER TABLE txoutbox.relays ADD COLUMN published_total bigint NOT NULL DEFAULT 0;
