"""What the ledger says about a run: every committed event against every handled one."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

# Every event the system committed: the library writers' (chaos.expected, written with the events) and the
# booking API's (one FlightBooked per flight row), with the server's commit time.
COMMITTED = """
SELECT e.event_id::text, e.aggregate_type, e.aggregate_id, e.seq, e.oversized,
       pg_xact_commit_timestamp(e.xmin) AS committed_at
FROM chaos.expected AS e
UNION ALL
SELECT NULL, 'Flight', f.id::text, NULL, false, pg_xact_commit_timestamp(f.xmin)
FROM public.flights AS f
"""
HANDLED = """
SELECT l.n, l.event_id::text, l.aggregate_type, l.aggregate_id, l.seq, pg_xact_commit_timestamp(l.xmin)
FROM chaos.ledger AS l ORDER BY l.n
"""
DEAD_LETTERS = "SELECT event_id::text, aggregate_type, aggregate_id, reason FROM txoutbox.dead_letters"


@dataclass
class Verdict:
    committed: int = 0
    lost: int = 0
    handled_twice: int = 0
    order_violations: int = 0
    stuck: int = 0
    dead_letters: int = 0
    dead_letters_expected: int = 0
    unexpected_dead_letters: int = 0
    sqs_dlq_messages: int = 0
    max_ms_during_faults: float = 0.0
    max_ms_after_faults: float = 0.0
    examples: dict[str, list[str]] = field(default_factory=dict)
    lost_by_type: dict[str, int] = field(default_factory=dict)
    slowest: str = ""

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.handled_twice
            or self.order_violations
            or self.stuck
            or self.unexpected_dead_letters
            or self.sqs_dlq_messages
            or self.dead_letters != self.dead_letters_expected
        )


def _example(verdict: Verdict, key: str, value: str) -> None:
    found = verdict.examples.setdefault(key, [])
    if len(found) < 5:
        found.append(value)


def judge(
    database_url: str,
    *,
    faults_started: float,
    last_fault_end: float,
    stuck_after: float,
    sqs_dlq_messages: int,
) -> Verdict:
    """Read the ledger. Times are wall-clock seconds; `stuck_after` seconds after the last fault, every event
    committed before it must have been handled (or dead-lettered, if oversized)."""
    with psycopg.connect(database_url) as conn:
        committed = conn.execute(COMMITTED).fetchall()
        handled = conn.execute(HANDLED).fetchall()
        dead = conn.execute(DEAD_LETTERS).fetchall()
    v = Verdict(committed=len(committed), sqs_dlq_messages=sqs_dlq_messages)
    by_event: dict[str, list[Any]] = defaultdict(list)
    by_flight: dict[str, list[Any]] = defaultdict(list)
    for row in handled:
        by_event[row[1]].append(row)
        if row[2] == "Flight":
            by_flight[row[3]].append(row)
    v.handled_twice = sum(len(rows) - 1 for rows in by_event.values() if len(rows) > 1)
    for event_id, rows in by_event.items():
        if len(rows) > 1:
            _example(v, "handled_twice", event_id)

    dead_ids = {row[0] for row in dead}
    oversized = {row[0] for row in committed if row[4]}
    v.dead_letters = len(dead_ids)
    v.dead_letters_expected = len(oversized)
    for row in dead:
        if row[0] not in oversized:
            v.unexpected_dead_letters += 1
            _example(v, "unexpected_dead_letters", f"{row[0]} {row[1]} {row[2]}: {row[3]}")

    cutoff = dt.datetime.fromtimestamp(last_fault_end + stuck_after, dt.UTC)
    fault_start = dt.datetime.fromtimestamp(faults_started, dt.UTC)
    fault_end = dt.datetime.fromtimestamp(last_fault_end, dt.UTC)
    for event_id, aggregate_type, aggregate_id, _seq, is_oversized, committed_at in committed:
        rows = by_event.get(event_id, []) if event_id is not None else by_flight.get(aggregate_id, [])
        if is_oversized:
            if event_id not in dead_ids:
                v.lost += 1
                _example(
                    v, "lost", f"{event_id} {aggregate_type} {aggregate_id} (oversized, not dead-lettered)"
                )
            continue
        if not rows:
            v.lost += 1
            _example(v, "lost", f"{event_id or '(booking)'} {aggregate_type} {aggregate_id}")
            v.lost_by_type[aggregate_type] = v.lost_by_type.get(aggregate_type, 0) + 1
            if committed_at < fault_end:
                v.stuck += 1
            continue
        handled_at = rows[0][5]
        if committed_at < fault_end and handled_at > cutoff:
            v.stuck += 1
            _example(v, "stuck", f"{event_id or '(booking)'} {aggregate_type} {aggregate_id}")
        ms = (handled_at - committed_at).total_seconds() * 1000.0
        if committed_at < fault_start:
            continue
        if committed_at <= fault_end:
            if ms > v.max_ms_during_faults:
                v.slowest = f"{aggregate_type} {aggregate_id} committed {committed_at:%H:%M:%S.%f}"
            v.max_ms_during_faults = max(v.max_ms_during_faults, ms)
        else:
            v.max_ms_after_faults = max(v.max_ms_after_faults, ms)

    # Order: within an aggregate, the events must be handled in the order they were written (seq), each
    # counted at its first handling.
    last_seq: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for _n, event_id, aggregate_type, aggregate_id, seq, _at in handled:
        if seq is None or event_id in seen:
            continue
        seen.add(event_id)
        key = (aggregate_type, aggregate_id)
        if key in last_seq and seq <= last_seq[key]:
            v.order_violations += 1
            _example(v, "order_violations", f"{aggregate_type} {aggregate_id}: {seq} after {last_seq[key]}")
        last_seq[key] = max(seq, last_seq.get(key, -1))
    return v


def settled(database_url: str) -> tuple[int, int]:
    """(events still to be handled or dead-lettered, events committed) right now."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM chaos.expected AS e WHERE NOT e.oversized
                 AND NOT EXISTS (SELECT 1 FROM chaos.ledger AS l WHERE l.event_id = e.event_id))
              + (SELECT count(*) FROM chaos.expected AS e WHERE e.oversized
                 AND NOT EXISTS (SELECT 1 FROM txoutbox.dead_letters AS d WHERE d.event_id = e.event_id))
              + (SELECT count(*) FROM public.flights AS f WHERE NOT EXISTS (
                   SELECT 1 FROM chaos.ledger AS l
                   WHERE l.aggregate_type = 'Flight' AND l.aggregate_id = f.id::text)),
              (SELECT count(*) FROM chaos.expected) + (SELECT count(*) FROM public.flights)
            """
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
