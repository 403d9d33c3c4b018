"""The console's own SQL, by name (the outbox and dead-letter views reuse `txoutbox.queries` via `ops`)."""

from __future__ import annotations

# Every relay that has registered, live or silent, with its publish counter (migration 0003).
RELAYS = """
SELECT relay_id, hostname, pid, started_at, heartbeat_at,
       EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds,
       heartbeat_at > now() - make_interval(secs => %(live_within_seconds)s) AS live,
       circuit_state, circuit_reason, circuit_opened_at, published_total
FROM txoutbox.relays
ORDER BY started_at, relay_id
"""
