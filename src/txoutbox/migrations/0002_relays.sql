-- txoutbox 0002: what running relays report, so `/health`, `txoutbox status` and alerts see the circuit
-- state of every relay process without talking to them.
CREATE TABLE txoutbox.relays (
    relay_id          text        PRIMARY KEY,
    hostname          text        NOT NULL,
    pid               integer     NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    circuit_state     text        NOT NULL DEFAULT 'closed'
                      CHECK (circuit_state IN ('closed', 'open', 'half-open')),
    circuit_reason    text,
    circuit_opened_at timestamptz
);

-- One row per alert (today: 'outbox'): the state last announced to ALERT_WEBHOOK_URL. Relays flip it with
-- a conditional UPDATE, so one POST goes out per state change however many relays run.
CREATE TABLE txoutbox.alerts (
    name       text        PRIMARY KEY,
    state      text        NOT NULL CHECK (state IN ('ok', 'degraded')),
    detail     text,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO txoutbox.alerts (name, state) VALUES ('outbox', 'ok');
