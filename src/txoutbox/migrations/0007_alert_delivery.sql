-- txoutbox 0007: alert delivery that loses nothing. The shared alert state is flipped by the relay that
-- sees a change first; the webhook POST is made after, by any relay, until the receiver accepts it:
-- `notified_state` is the state last announced, `sending_until` a short lease of the relay sending now.
ALTER TABLE txoutbox.alerts
    ADD COLUMN notified_state text,
    ADD COLUMN sending_until  timestamptz;
UPDATE txoutbox.alerts SET notified_state = state;
