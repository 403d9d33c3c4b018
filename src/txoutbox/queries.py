"""Every SQL statement txoutbox runs, by name, in one place.

Placeholders are psycopg's `%(name)s`; `as_sqlalchemy()` turns a statement into SQLAlchemy's `:name` form.
Tables live in the `txoutbox` schema (see `migrations/`).
"""

from __future__ import annotations

import re

NOTIFY_CHANNEL = "txoutbox_outbox"

# Per-aggregate order. Writers of one aggregate are serialised by a lock ROW in txoutbox.aggregate_locks
# (migrations 0005, 0009), taken BEFORE the outbox identity values are drawn, in the same statement: a new
# aggregate's row is inserted; an existing row (left behind by an earlier writer) is locked by
# `ON CONFLICT ... DO UPDATE ... WHERE false`, which never updates but locks the row all the same. A second
# writer of the aggregate waits on the first's row lock until it commits or rolls back. So within an
# aggregate, id order equals commit order, which is what the relay's claim relies on: it hands out an
# aggregate's events by row id, the lowest still in the outbox first, and could otherwise publish event 2
# before a slower writer commits event 1. Writers of different aggregates touch different rows and never
# wait on each other (the old 1,024 hashed advisory-lock buckets made unrelated writers wait, and deadlock
# across calls). Row locks live in the rows, not in PostgreSQL's finite lock table, so a bulk write of any
# number of aggregates takes them all. Rows are taken sorted within a call; two transactions writing the
# SAME aggregates in opposite order across calls can still deadlock (PostgreSQL aborts one).
# The rows stay behind (deleting them cost the writer a second statement); relays prune the ones nobody
# holds (AGGREGATE_LOCKS_PRUNE), and the table is UNLOGGED, so neither insert nor prune writes WAL.
# Under REPEATABLE READ, a writer of an aggregate whose row was created after its snapshot gets a
# serialization failure (retry it), as for any row another transaction changed concurrently.
ADVISORY_LOCK_CLASS = 0x7478  # "tx": txoutbox's class in the two-int advisory lock space

INSERT_EVENTS = """
WITH ev AS (
    SELECT *
    FROM unnest(
        CAST(%(event_ids)s AS uuid[]), CAST(%(aggregate_types)s AS text[]), CAST(%(aggregate_ids)s AS text[]),
        CAST(%(event_types)s AS text[]), CAST(%(payloads)s AS jsonb[]), CAST(%(payload_bytes)s AS integer[])
    ) WITH ORDINALITY AS e(event_id, aggregate_type, aggregate_id, event_type, payload, payload_bytes, n)
),
locked AS (
    INSERT INTO txoutbox.aggregate_locks (aggregate_type, aggregate_id)
    SELECT DISTINCT aggregate_type, aggregate_id FROM ev ORDER BY 1, 2
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET aggregate_id = excluded.aggregate_id WHERE false
    RETURNING 1
),
ordered AS (
    SELECT count(*) AS locks FROM locked
),
ins AS (
    INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload, payload_bytes,
                                 traceparent, tracestate)
    SELECT ev.event_id, ev.aggregate_type, ev.aggregate_id, ev.event_type, ev.payload, ev.payload_bytes,
           CAST(%(traceparent)s AS text), CAST(%(tracestate)s AS text)
    FROM ev CROSS JOIN ordered
    ORDER BY ev.n
    RETURNING 1
)
SELECT count(*) FROM ins
"""

# The insert for events of aggregates the caller created in this same transaction (add_event's
# `new_aggregate=True`): no lock row. No other transaction can write an event of an aggregate it cannot
# see yet, so the next writer of it starts after this one commits and draws a higher id; id order is
# commit order without a lock (the lock row cost about a tenth of a booking's database CPU).
INSERT_EVENTS_NEW_AGGREGATES = re.sub(
    r"locked AS \(.*?\),\nordered AS \(.*?\),\n", "", INSERT_EVENTS, count=1, flags=re.S
).replace("FROM ev CROSS JOIN ordered", "FROM ev")

# The same for ONE event (add_event's common case), with plain parameters: without the arrays' unnest,
# ordinality and sort, about 12 us less database CPU per call.
INSERT_EVENT_NEW_AGGREGATE = """
WITH ins AS (
    INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload, payload_bytes,
                                 traceparent, tracestate)
    VALUES (CAST(%(event_id)s AS uuid), CAST(%(aggregate_type)s AS text), CAST(%(aggregate_id)s AS text),
            CAST(%(event_type)s AS text), CAST(%(payload)s AS jsonb), CAST(%(payload_size)s AS integer),
            CAST(%(traceparent)s AS text), CAST(%(tracestate)s AS text))
    RETURNING 1
)
SELECT count(*) FROM ins
"""

# The same insert, waking relays at commit - but only while one waits for work (txoutbox.idle_relays,
# migration 0006). A NOTIFY takes a global lock at commit, about 30 % of the writers' throughput at full
# load; a relay with work polls on its own and has no row there, so a busy system sends no NOTIFY at all.
# (CASE evaluates pg_notify only when the condition holds; the EXISTS is one probe of a tiny table.)
INSERT_EVENTS_AND_NOTIFY = INSERT_EVENTS.replace(
    "SELECT count(*) FROM ins",
    f"""SELECT n, CASE WHEN EXISTS (SELECT 1 FROM txoutbox.idle_relays WHERE until > now())
                 THEN pg_notify('{NOTIFY_CHANNEL}', '') END
FROM (SELECT count(*) AS n FROM ins) AS c""",
)
INSERT_EVENTS_NEW_AGGREGATES_AND_NOTIFY = INSERT_EVENTS_NEW_AGGREGATES.replace(
    "SELECT count(*) FROM ins", INSERT_EVENTS_AND_NOTIFY.rsplit("\n)\n", 1)[1].strip()
)
INSERT_EVENT_NEW_AGGREGATE_AND_NOTIFY = INSERT_EVENT_NEW_AGGREGATE.replace(
    "SELECT count(*) FROM ins", INSERT_EVENTS_AND_NOTIFY.rsplit("\n)\n", 1)[1].strip()
)

# A relay that found nothing to do for a while: writers notify from now on (until it withdraws, or
# `until` passes if it dies).
IDLE_ANNOUNCE = """
INSERT INTO txoutbox.idle_relays (relay_id, until)
VALUES (%(relay_id)s, now() + make_interval(secs => %(valid_seconds)s))
ON CONFLICT (relay_id) DO UPDATE SET until = excluded.until
"""

# The relay has work again: it polls on its own, writers need not notify.
IDLE_WITHDRAW = "DELETE FROM txoutbox.idle_relays WHERE relay_id = %(relay_id)s"

# The claim's low-water mark (see CLAIM and txoutbox.relay.store): the lowest id at or above `low` still
# in the outbox (NULL when none is), the bounds of the running transactions, and the re-insert counter.
# An id seen here becomes the relay's mark only once every transaction running now has ended: a slower
# writer may still commit a lower id (its identity value was drawn earlier); once it has, the next look
# sees it.
LOW_WATER = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT o.id FROM txoutbox.outbox AS o WHERE o.id >= %(low)s ORDER BY o.id LIMIT 1) AS live_min,
       (SELECT n FROM txoutbox.outbox_reinserts) AS reinserts
"""

# Relays' housekeeping (with their heartbeat): delete lock rows that no writer holds now, a batch at a
# time. SKIP LOCKED passes over rows held by running writers (their lock, or their uncommitted insert);
# a writer that comes for a row this deletes waits for the delete to commit, then inserts a fresh row.
AGGREGATE_LOCKS_PRUNE = """
DELETE FROM txoutbox.aggregate_locks
WHERE ctid = ANY(ARRAY(SELECT ctid FROM txoutbox.aggregate_locks LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
"""

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
# Memory: the claim also stops at a byte budget (`max_claim_bytes`, the running sum of the payloads' sizes
# in id order, a prefix, so the per-aggregate chain above still holds), and a payload too large to ever be
# sent (over `max_payload_bytes`) comes back as NULL with its size: the relay dead-letters it unread.
# Sizes come from the stored `payload_bytes` column (the writer's JSON size, migration 0010), so neither
# check reads a payload; a row inserted without one (plain SQL) is measured here instead.
#
# Cost: every check is an index probe per candidate row, never a scan of the backlog, whatever the
# statistics say (the outbox is usually recorded as empty; see relay.store.CLAIM_PLANNER_SETTINGS):
# - The order checks compare (aggregate_type, aggregate_id, id) as rows: only outbox_aggregate_idx can
#   serve that. Written as `p.id < o.id`, a planner expecting one row probed by the primary key instead, a
#   range of every id below the candidate: the claim grew with the square of the backlog.
# - The candidates are read in id order up to the LIMIT: the relay's sessions have sorts disabled, so
#   the primary key, which gives that order, is preferred over any scan of the backlog and a sort
#   (expecting one row, the planner had read every waiting row, then sorted them).
# - The leases are written by the rows' physical addresses (ctid: the rows are locked by this statement,
#   so they cannot move), not by a join with the claimed rows, which such a planner ran as a nested loop
#   over the whole outbox.
# - `OFFSET 0` keeps the held-back check a per-row probe of outbox_aggregate_idx: without it the planner
#   turns the NOT EXISTS into an anti-join over a sequential scan of the whole outbox (about 20 ms per
#   claim with a 100,000-event backlog, the relay's bottleneck). It runs only for a row with an earlier
#   event of its aggregate in the table (`prev`): without one there is nothing it could find. (It only
#   keeps rows that would wait out of the LIMIT; the chain below alone keeps the order.)
# - The dead-letter probe runs only while the dead_letters table holds a row at all (`dead`, one look per
#   claim, in the statement's snapshot): an empty table cannot hold back anything.
# - "every earlier event is in this claim" is checked as a chain: each candidate's immediate predecessor
#   in the table (`prev_id`, one backward index probe) must be its predecessor among the candidates (`lag`),
#   and so for all candidates of its aggregate before it (`bool_and` running over the aggregate). By
#   induction over the chain this is exactly "no earlier event of the aggregate is missing from the claim",
#   in time linear in the claim, however many events of one aggregate it holds.
# - Every scan starts at `low`, the relay's low-water mark (LOW_WATER; txoutbox.relay.store): no event
#   below it is in the outbox. Rows deleted while some session holds an old snapshot (a pinned xmin
#   horizon) cannot be vacuumed nor their index entries marked dead; scans from the outbox's start would
#   walk all of them, each claim. Events that come back under their old ids (dead letters retried) bump
#   `outbox_reinserts` in the same transaction: a mark read before that no longer matches, and the claim
#   scans from 0, so the order checks always see every earlier event.
# - The candidate scan itself may start later, at `start` >= `low`: past the rows this relay has just
#   claimed and still holds (txoutbox.relay.store: they would be walked, leased, by every claim). Where the
#   scan starts never affects the order (the checks above look from `low`); rows it passes over are seen
#   by the next claim from `low`.
CLAIM = """
WITH mark AS (
    SELECT CASE WHEN %(reinserts)s = (SELECT n FROM txoutbox.outbox_reinserts) THEN %(low)s ELSE 0
           END AS low,
           CASE WHEN %(reinserts)s = (SELECT n FROM txoutbox.outbox_reinserts) THEN %(start)s ELSE 0
           END AS start
),
dead AS (
    SELECT EXISTS (SELECT 1 FROM txoutbox.dead_letters) AS any_dead
),
candidate AS (
    SELECT o.ctid, o.id, o.aggregate_type, o.aggregate_id,
           coalesce(o.payload_bytes, octet_length(o.payload::text)) AS payload_bytes, prev.id AS prev_id
    FROM txoutbox.outbox AS o
    LEFT JOIN LATERAL (
        SELECT p.id FROM txoutbox.outbox AS p
        WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
          AND (p.aggregate_type, p.aggregate_id, p.id) < (o.aggregate_type, o.aggregate_id, o.id)
          AND (p.aggregate_type, p.aggregate_id, p.id)
              >= (o.aggregate_type, o.aggregate_id, (SELECT low FROM mark))
        ORDER BY p.id DESC
        LIMIT 1
    ) AS prev ON true
    WHERE o.id >= (SELECT start FROM mark)
      AND o.next_attempt_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until <= now())
      AND (prev.id IS NULL OR NOT EXISTS (
          SELECT 1 FROM txoutbox.outbox AS p
          WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
            AND (p.aggregate_type, p.aggregate_id, p.id) < (o.aggregate_type, o.aggregate_id, o.id)
            AND (p.aggregate_type, p.aggregate_id, p.id)
              >= (o.aggregate_type, o.aggregate_id, (SELECT low FROM mark))
            AND (p.next_attempt_at > now() OR p.locked_until > now())
          OFFSET 0))
      AND (NOT (SELECT any_dead FROM dead) OR NOT EXISTS (
          SELECT 1 FROM txoutbox.dead_letters AS d
          WHERE d.aggregate_type = o.aggregate_type AND d.aggregate_id = o.aggregate_id))
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
),
chain AS (
    SELECT c.ctid, c.id, c.aggregate_type, c.aggregate_id, c.payload_bytes,
           c.prev_id IS NOT DISTINCT FROM
               lag(c.id) OVER (PARTITION BY c.aggregate_type, c.aggregate_id ORDER BY c.id) AS linked
    FROM candidate AS c
),
claimable AS (
    SELECT s.ctid
    FROM (
        SELECT ch.ctid, ch.id, ch.payload_bytes,
               bool_and(ch.linked)
                   OVER (PARTITION BY ch.aggregate_type, ch.aggregate_id ORDER BY ch.id) AS ok,
               sum(least(ch.payload_bytes, %(max_payload_bytes)s)) OVER (ORDER BY ch.id)
                   - least(ch.payload_bytes, %(max_payload_bytes)s) AS bytes_before
        FROM chain AS ch
    ) AS s
    WHERE s.ok AND s.bytes_before < %(max_claim_bytes)s
)
UPDATE txoutbox.outbox AS o
SET locked_by = %(relay_id)s, locked_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE o.ctid = ANY(ARRAY(SELECT c.ctid FROM claimable AS c))
RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type,
          CASE WHEN coalesce(o.payload_bytes, octet_length(o.payload::text)) <= %(max_payload_bytes)s
               THEN o.payload::text END,
          o.created_at, o.attempts, o.traceparent, o.tracestate,
          coalesce(o.payload_bytes, octet_length(o.payload::text))
"""

# The relay's statements on the rows of a claim take their ids as one bigint[] parameter. The relay passes
# it as an array literal (`id_array`), one string: psycopg's list adapter looks at every element in Python,
# three times the cost per id of joining the numbers (hundreds of ids per claim). A list works as well.
IDS = "CAST(%(ids)s AS bigint[])"


def id_array(ids: list[int]) -> str:
    """`ids` as a PostgreSQL array literal, for the `%(ids)s` parameter (IDS) of the relay's statements."""
    return "{" + ",".join(map(str, ids)) + "}"


# Published: gone. Whoever holds the lease now, the broker has the message.
DELETE_PUBLISHED = f"DELETE FROM txoutbox.outbox WHERE id = ANY({IDS})"

# A transient failure of one event: count the attempt, remember why, try again after the delay.
RECORD_FAILURES = f"""
UPDATE txoutbox.outbox AS o
SET attempts = o.attempts + 1, last_error = f.error,
    next_attempt_at = now() + make_interval(secs => f.delay), locked_by = NULL, locked_until = NULL
FROM unnest({IDS}, CAST(%(errors)s AS text[]), CAST(%(delays)s AS float8[]))
     AS f(id, error, delay)
WHERE o.id = f.id AND o.locked_by = %(relay_id)s
"""

# A permanent failure (or attempts used up): move the event, with its id, to the dead letters.
DEAD_LETTER = f"""
WITH f AS (
    SELECT * FROM unnest({IDS}, CAST(%(reasons)s AS text[])) AS f(id, reason)
),
moved AS (
    DELETE FROM txoutbox.outbox AS o USING f WHERE o.id = f.id AND o.locked_by = %(relay_id)s
    RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.created_at,
              o.attempts, f.reason, o.traceparent, o.tracestate
)
INSERT INTO txoutbox.dead_letters
    (id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, attempts, reason,
     traceparent, tracestate)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, attempts + 1, reason,
       traceparent, tracestate
FROM moved
"""

# Give claimed events back untouched (broker-wide outage, shutdown, an earlier event of the aggregate
# failed): no attempt is counted.
RELEASE = f"""
UPDATE txoutbox.outbox SET locked_by = NULL, locked_until = NULL
WHERE id = ANY({IDS}) AND locked_by = %(relay_id)s
"""

# Extend the leases of claimed rows still ours; a row not returned was taken by another relay after our
# lease ran out, and must not be published by us any more.
RENEW_LEASES = f"""
UPDATE txoutbox.outbox SET locked_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = ANY({IDS}) AND locked_by = %(relay_id)s
RETURNING id
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

# Back into the outbox with its original id, so it is again first in its aggregate's order. The counter is
# bumped in the same transaction: relays see it together with the events and scan from 0 (CLAIM).
DEAD_LETTER_RETRY = """
WITH bump AS (
    UPDATE txoutbox.outbox_reinserts SET n = n + 1
),
moved AS (
    DELETE FROM txoutbox.dead_letters
    WHERE %(all)s OR id = %(id)s
    RETURNING id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, traceparent,
              tracestate
)
INSERT INTO txoutbox.outbox
    (id, event_id, aggregate_type, aggregate_id, event_type, payload, payload_bytes, created_at, traceparent,
     tracestate)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, octet_length(payload::text),
       created_at, traceparent, tracestate
FROM moved
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

# One small batch of a consumer's expired inbox rows, oldest first (inbox_processed_idx): short transactions,
# never a long lock or a burst of WAL. Rows a concurrent pruner holds are skipped.
INBOX_PRUNE = """
DELETE FROM txoutbox.inbox AS i
USING (SELECT consumer, event_id FROM txoutbox.inbox
       WHERE consumer = %(consumer)s AND processed_at < now() - make_interval(secs => %(older_than_seconds)s)
       ORDER BY processed_at
       LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED) AS old
WHERE i.consumer = old.consumer AND i.event_id = old.event_id
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


# Relay registry: heartbeats with the circuit state and the events published since the relay started (the
# console charts the publish rate from it); rows of relays silent for long are ignored and pruned.
RELAY_HEARTBEAT = """
INSERT INTO txoutbox.relays AS r
    (relay_id, hostname, pid, circuit_state, circuit_reason, circuit_opened_at, published_total)
VALUES (%(relay_id)s, %(hostname)s, %(pid)s, %(circuit_state)s, %(circuit_reason)s,
        CASE WHEN %(circuit_state)s = 'closed' THEN NULL ELSE now() END, %(published_total)s)
ON CONFLICT (relay_id) DO UPDATE
SET heartbeat_at = now(), circuit_state = excluded.circuit_state, circuit_reason = excluded.circuit_reason,
    published_total = excluded.published_total,
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

# Flip the alert only if its state differs. The webhook POST is made later (ALERT_TAKE / ALERT_SENT).
ALERT_FLIP = """
UPDATE txoutbox.alerts SET state = %(state)s, detail = %(detail)s, changed_at = now()
WHERE name = %(name)s AND state <> %(state)s
RETURNING name, state, changed_at
"""

# A state change not yet announced, leased for one POST by one relay at a time.
ALERT_TAKE = """
UPDATE txoutbox.alerts
SET sending_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE name = %(name)s AND state IS DISTINCT FROM notified_state
  AND (sending_until IS NULL OR sending_until < now())
RETURNING state, detail, changed_at
"""

# The receiver accepted the POST of the change made at `changed_at` (a later flip stays pending).
ALERT_SENT = """
UPDATE txoutbox.alerts
SET notified_state = CASE WHEN changed_at = %(changed_at)s THEN %(state)s ELSE notified_state END,
    sending_until = NULL
WHERE name = %(name)s
"""

# The POST failed: give the lease back so the next try (by any relay) need not wait for it.
ALERT_UNTAKE = "UPDATE txoutbox.alerts SET sending_until = NULL WHERE name = %(name)s"

# txoutbox.testing: outbox rows with the id of the transaction that wrote them.
OUTBOX_EVENTS_WITH_XMIN = """
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, xmin::text AS xmin
FROM txoutbox.outbox ORDER BY id
"""

# -- retention and replay (txoutbox.retention, `txoutbox published|replay|retention`) ---------------------

# Published, with retention on: the rows leave the outbox and land in the archive in one statement.
ARCHIVE_PUBLISHED = f"""
WITH moved AS (
    DELETE FROM txoutbox.outbox WHERE id = ANY({IDS})
    RETURNING id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, traceparent,
              tracestate
)
INSERT INTO txoutbox.published
    (id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, traceparent, tracestate)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, traceparent, tracestate
FROM moved
"""

# One maintainer at a time (relays and `txoutbox retention` may run together).
RETENTION_LOCK = f"SELECT pg_try_advisory_xact_lock({ADVISORY_LOCK_CLASS}, 1024)"

# DDL on the archive waits at most this long for its lock: acknowledgements must not queue behind it.
RETENTION_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"

PUBLISHED_PARTITIONS = """
SELECT c.relname
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'txoutbox.published'::regclass AND left(c.relname, 11) = 'published_p'
ORDER BY c.relname
"""

PUBLISHED_DEFAULT_COUNT = "SELECT count(*) FROM txoutbox.published_default"
# Taken before the stray days are read: an acknowledgement still in flight into the default partition (a day
# with no partition yet) is waited for and seen, instead of making the new partition's CREATE fail.
LOCK_PUBLISHED_DEFAULT = "LOCK TABLE txoutbox.published_default IN SHARE ROW EXCLUSIVE MODE"
# The UTC days of rows caught by the default partition: each gets its partition (then expires as usual).
PUBLISHED_DEFAULT_DAYS = """
SELECT DISTINCT (published_at AT TIME ZONE 'UTC')::date AS day FROM txoutbox.published_default ORDER BY 1
"""

# DDL templates: `{name}` is a partition's name, composed with psycopg.sql.Identifier; the bounds are
# literals composed with psycopg.sql.Literal (DDL takes no parameters).
CREATE_PUBLISHED_PARTITION = """
CREATE TABLE IF NOT EXISTS txoutbox.{name} PARTITION OF txoutbox.published FOR VALUES FROM ({lo}) TO ({hi})
"""
DROP_PUBLISHED_PARTITION = "DROP TABLE IF EXISTS txoutbox.{name}"
# Rows the default partition caught for a day that now gets its own partition: PostgreSQL refuses to create
# a partition whose rows sit in the default, so the default is detached, the day created, its rows moved
# into it, and the default attached again (one transaction; rare: only when the job fell days behind).
DETACH_PUBLISHED_DEFAULT = "ALTER TABLE txoutbox.published DETACH PARTITION txoutbox.published_default"
ATTACH_PUBLISHED_DEFAULT = (
    "ALTER TABLE txoutbox.published ATTACH PARTITION txoutbox.published_default DEFAULT"
)
MOVE_FROM_PUBLISHED_DEFAULT = """
WITH moved AS (
    DELETE FROM txoutbox.published_default WHERE published_at >= %(lo)s AND published_at < %(hi)s RETURNING *
)
INSERT INTO txoutbox.published SELECT * FROM moved
"""

# The archive, filtered; every filter is optional (NULL: any). Ordered by outbox id: within an aggregate
# that is the order the events were written (and published) in. Paged by id (`after_id`), so a replay
# never holds a transaction open while it sends.
_PUBLISHED_FILTER = """
WHERE id > %(after_id)s
  AND (%(aggregate_type)s::text IS NULL OR aggregate_type = %(aggregate_type)s)
  AND (%(aggregate_id)s::text IS NULL OR aggregate_id = %(aggregate_id)s)
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
"""
PUBLISHED_LIST = f"""
SELECT id, event_id, aggregate_type, aggregate_id, event_type, created_at, published_at
FROM txoutbox.published {_PUBLISHED_FILTER}
ORDER BY id LIMIT %(limit)s
"""
PUBLISHED_FOR_REPLAY = f"""
SELECT id, event_id, aggregate_type, aggregate_id, event_type, created_at, payload::text AS payload
FROM txoutbox.published {_PUBLISHED_FILTER}
ORDER BY id LIMIT %(limit)s
"""
PUBLISHED_COUNT = f"SELECT count(*) AS n FROM txoutbox.published {_PUBLISHED_FILTER}"
