"""Every SQL statement txoutbox runs, by name, in one place.

Placeholders are psycopg's `%(name)s`; `as_sqlalchemy()` turns a statement into SQLAlchemy's `:name` form.
Tables live in the `txoutbox` schema (see `migrations/`).
"""

from __future__ import annotations

import re

NOTIFY_CHANNEL = "txoutbox_outbox"

# Writers of the same aggregate are serialised by a transaction-scoped advisory lock taken BEFORE the
# identity value is drawn, so within an aggregate id order equals commit order and the relay can never
# see a later event of an aggregate committed before an earlier one. Keys are sorted: two transactions
# writing the same aggregates take their locks in the same order. (The two-int advisory lock space, with
# our own class id, stays clear of applications' bigint advisory locks.)
ADVISORY_LOCK_CLASS = 0x7478  # "tx"
# Aggregates hash into this many lock buckets, so a bulk write of 100,000 aggregates takes at most 1,024
# locks (PostgreSQL's lock table is finite: max_locks_per_transaction x max_connections). Two writers of
# different aggregates in the same bucket merely commit one after the other.
ADVISORY_LOCK_BUCKETS = 1024

INSERT_EVENTS = f"""
WITH ev AS (
    SELECT *
    FROM unnest(
        CAST(%(event_ids)s AS uuid[]), CAST(%(aggregate_types)s AS text[]), CAST(%(aggregate_ids)s AS text[]),
        CAST(%(event_types)s AS text[]), CAST(%(payloads)s AS jsonb[])
    ) WITH ORDINALITY AS e(event_id, aggregate_type, aggregate_id, event_type, payload, n)
),
ordered AS (
    SELECT count(pg_advisory_xact_lock({ADVISORY_LOCK_CLASS}, k)) AS locks
    FROM (SELECT DISTINCT hashtext(aggregate_type || ':' || aggregate_id) & {ADVISORY_LOCK_BUCKETS - 1} AS k
          FROM ev ORDER BY 1) AS keys
),
ins AS (
    INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload)
    SELECT ev.event_id, ev.aggregate_type, ev.aggregate_id, ev.event_type, ev.payload
    FROM ev CROSS JOIN ordered
    ORDER BY ev.n
    RETURNING 1
)
SELECT count(*) FROM ins
"""

# The same insert, waking listening relays at commit (one notification per transaction).
INSERT_EVENTS_AND_NOTIFY = INSERT_EVENTS.replace(
    "SELECT count(*) FROM ins",
    f"SELECT n, pg_notify('{NOTIFY_CHANNEL}', '') FROM (SELECT count(*) AS n FROM ins) AS c",
)

# NOTIFY only wakes relays; they always re-query. Identical notifications of one transaction are folded
# into one by PostgreSQL.
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"

# The claim, in one statement. A row is claimable when it is due, not leased, not behind a held-back
# (leased, backing off or dead-lettered) earlier event of its aggregate, and - checked after the row locks
# are taken - every earlier event of its aggregate still in the table is claimed by this same statement.
# The second check is what keeps per-aggregate order with several relays claiming at once: SKIP LOCKED
# lets a concurrent claimer skip rows another claimer has just locked, and without it that claimer could
# take event 2 while event 1 goes to someone else.
#
# Cost: every check is an index probe per candidate row, never a scan of the backlog.
# - `OFFSET 0` keeps the held-back check a per-row probe of outbox_aggregate_idx: without it the planner
#   turns the NOT EXISTS into an anti-join over a sequential scan of the whole outbox (about 20 ms per
#   claim with a 100,000-event backlog, the relay's bottleneck).
# - "every earlier event is in this claim" is checked as a chain: each candidate's immediate predecessor
#   in the table (`prev_id`, one backward index probe) must be its predecessor among the candidates (`lag`),
#   and so for all candidates of its aggregate before it (`bool_and` running over the aggregate). By
#   induction over the chain this is exactly "no earlier event of the aggregate is missing from the claim",
#   in time linear in the claim, however many events of one aggregate it holds.
CLAIM = """
WITH candidate AS (
    SELECT o.id, o.aggregate_type, o.aggregate_id,
           (SELECT p.id FROM txoutbox.outbox AS p
            WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id AND p.id < o.id
            ORDER BY p.id DESC
            LIMIT 1) AS prev_id
    FROM txoutbox.outbox AS o
    WHERE o.next_attempt_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM txoutbox.outbox AS p
          WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id AND p.id < o.id
            AND (p.next_attempt_at > now() OR p.locked_until > now())
          OFFSET 0)
      AND NOT EXISTS (
          SELECT 1 FROM txoutbox.dead_letters AS d
          WHERE d.aggregate_type = o.aggregate_type AND d.aggregate_id = o.aggregate_id)
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
),
chain AS (
    SELECT c.id, c.aggregate_type, c.aggregate_id,
           c.prev_id IS NOT DISTINCT FROM
               lag(c.id) OVER (PARTITION BY c.aggregate_type, c.aggregate_id ORDER BY c.id) AS linked
    FROM candidate AS c
),
claimable AS (
    SELECT s.id
    FROM (
        SELECT ch.id,
               bool_and(ch.linked) OVER (PARTITION BY ch.aggregate_type, ch.aggregate_id ORDER BY ch.id) AS ok
        FROM chain AS ch
    ) AS s
    WHERE s.ok
)
UPDATE txoutbox.outbox AS o
SET locked_by = %(relay_id)s, locked_until = now() + make_interval(secs => %(lease_seconds)s)
FROM claimable AS c
WHERE o.id = c.id
RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload::text, o.created_at,
          o.attempts
"""

# Published: gone. Whoever holds the lease now, the broker has the message.
DELETE_PUBLISHED = "DELETE FROM txoutbox.outbox WHERE id = ANY(%(ids)s)"

# A transient failure of one event: count the attempt, remember why, try again after the delay.
RECORD_FAILURES = """
UPDATE txoutbox.outbox AS o
SET attempts = o.attempts + 1, last_error = f.error,
    next_attempt_at = now() + make_interval(secs => f.delay), locked_by = NULL, locked_until = NULL
FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(errors)s AS text[]), CAST(%(delays)s AS float8[]))
     AS f(id, error, delay)
WHERE o.id = f.id AND o.locked_by = %(relay_id)s
"""

# A permanent failure (or attempts used up): move the event, with its id, to the dead letters.
DEAD_LETTER = """
WITH f AS (
    SELECT * FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(reasons)s AS text[])) AS f(id, reason)
),
moved AS (
    DELETE FROM txoutbox.outbox AS o USING f WHERE o.id = f.id AND o.locked_by = %(relay_id)s
    RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.created_at,
              o.attempts, f.reason
)
INSERT INTO txoutbox.dead_letters
    (id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, attempts, reason)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, attempts + 1, reason
FROM moved
"""

# Give claimed events back untouched (broker-wide outage, shutdown, an earlier event of the aggregate
# failed): no attempt is counted.
RELEASE = """
UPDATE txoutbox.outbox SET locked_by = NULL, locked_until = NULL
WHERE id = ANY(%(ids)s) AND locked_by = %(relay_id)s
"""

RELEASE_ALL = """
UPDATE txoutbox.outbox SET locked_by = NULL, locked_until = NULL WHERE locked_by = %(relay_id)s
"""

OUTBOX_COUNT = "SELECT count(*) FROM txoutbox.outbox"

OUTBOX_STATS = """
SELECT count(*) AS backlog,
       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds,
       count(*) FILTER (WHERE attempts > 0) AS retrying,
       (SELECT count(*) FROM txoutbox.dead_letters) AS dead_letters
FROM txoutbox.outbox
"""

# Operator views. `state` says why an event is still here.
OUTBOX_LIST = """
SELECT o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.created_at, o.attempts,
       o.next_attempt_at, o.last_error, o.locked_by, o.locked_until,
       CASE
         WHEN EXISTS (SELECT 1 FROM txoutbox.dead_letters AS d
                      WHERE d.aggregate_type = o.aggregate_type AND d.aggregate_id = o.aggregate_id)
           THEN 'held: earlier event dead-lettered'
         WHEN o.locked_until > now() THEN 'publishing'
         WHEN o.next_attempt_at > now() THEN 'retry scheduled'
         WHEN EXISTS (SELECT 1 FROM txoutbox.outbox AS p
                      WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
                        AND p.id < o.id)
           THEN 'waiting for an earlier event'
         ELSE 'ready'
       END AS state
FROM txoutbox.outbox AS o
WHERE NOT %(stuck_only)s
   OR o.attempts > 0
   OR o.created_at < now() - make_interval(secs => %(stuck_after_seconds)s)
   OR EXISTS (SELECT 1 FROM txoutbox.dead_letters AS d
              WHERE d.aggregate_type = o.aggregate_type AND d.aggregate_id = o.aggregate_id)
ORDER BY o.id
LIMIT %(limit)s
"""

RETRY_NOW = """
UPDATE txoutbox.outbox SET next_attempt_at = now()
WHERE (%(all)s OR id = %(id)s) AND next_attempt_at > now()
RETURNING id
"""

OUTBOX_EXISTS = "SELECT 1 FROM txoutbox.outbox WHERE id = %(id)s"

DEAD_LETTER_LIST = """
SELECT id, event_id, aggregate_type, aggregate_id, event_type, created_at, attempts, reason, dead_lettered_at,
       octet_length(payload::text) AS payload_bytes
FROM txoutbox.dead_letters ORDER BY id LIMIT %(limit)s
"""

DEAD_LETTER_SHOW = """
SELECT id, event_id, aggregate_type, aggregate_id, event_type, created_at, attempts, reason, dead_lettered_at,
       payload::text AS payload
FROM txoutbox.dead_letters WHERE id = %(id)s
"""

# Back into the outbox with its original id, so it is again first in its aggregate's order.
DEAD_LETTER_RETRY = """
WITH moved AS (
    DELETE FROM txoutbox.dead_letters WHERE %(all)s OR id = %(id)s
    RETURNING id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at
)
INSERT INTO txoutbox.outbox (id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at FROM moved
RETURNING id
"""

DEAD_LETTER_DISCARD = "DELETE FROM txoutbox.dead_letters WHERE id = %(id)s RETURNING id"

# Consumer inbox: the ids not seen before are returned; the rest are redeliveries.
INBOX_CLAIM = """
INSERT INTO txoutbox.inbox (consumer, event_id)
SELECT %(consumer)s, e FROM unnest(CAST(%(event_ids)s AS uuid[])) AS e
ON CONFLICT DO NOTHING
RETURNING event_id
"""

INBOX_PRUNE = """
DELETE FROM txoutbox.inbox WHERE consumer = %(consumer)s
  AND processed_at < now() - make_interval(secs => %(older_than_seconds)s)
"""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def as_sqlalchemy(sql: str) -> str:
    """Rewrite psycopg `%(name)s` placeholders as SQLAlchemy `:name` binds."""
    return _PLACEHOLDER.sub(r":\1", sql)


def as_positional(sql: str) -> tuple[str, list[str]]:
    """Rewrite placeholders as `$1, $2, ...` (for PREPARE); return the statement and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(number, sql), names


# Relay registry: heartbeats with the circuit state; rows of relays silent for long are ignored and pruned.
RELAY_HEARTBEAT = """
INSERT INTO txoutbox.relays AS r (relay_id, hostname, pid, circuit_state, circuit_reason, circuit_opened_at)
VALUES (%(relay_id)s, %(hostname)s, %(pid)s, %(circuit_state)s, %(circuit_reason)s,
        CASE WHEN %(circuit_state)s = 'closed' THEN NULL ELSE now() END)
ON CONFLICT (relay_id) DO UPDATE
SET heartbeat_at = now(), circuit_state = excluded.circuit_state, circuit_reason = excluded.circuit_reason,
    circuit_opened_at = CASE WHEN excluded.circuit_state = 'closed' THEN NULL
                             ELSE COALESCE(r.circuit_opened_at, now()) END
"""

RELAY_DEREGISTER = "DELETE FROM txoutbox.relays WHERE relay_id = %(relay_id)s"

RELAY_PRUNE = "DELETE FROM txoutbox.relays WHERE heartbeat_at < now() - interval '1 hour'"

# The circuit as the system sees it: open if any live relay has it open.
RELAYS_LIVE = """
SELECT relay_id, hostname, pid, started_at, heartbeat_at, circuit_state, circuit_reason, circuit_opened_at
FROM txoutbox.relays
WHERE heartbeat_at > now() - make_interval(secs => %(live_within_seconds)s)
ORDER BY relay_id
"""

# Flip the alert only if its state differs: the relay whose UPDATE returns a row sends the webhook.
ALERT_FLIP = """
UPDATE txoutbox.alerts SET state = %(state)s, detail = %(detail)s, changed_at = now()
WHERE name = %(name)s AND state <> %(state)s
RETURNING name, state, changed_at
"""
