"""A pinned xmin horizon: the null-sink relay draining 300,000 events with and without a snapshot held.

A session holding a snapshot (an idle REPEATABLE READ transaction: a report, a forgotten psql) keeps every
row deleted after it started from being vacuumed, and their index entries from being marked dead: each
claim that walks the outbox's indexes meets them. The figure is the relay's throughput over the LAST
100,000 events of the 300,000 (when 200,000 deleted rows lie in front of the claim), with the snapshot
taken right after the backlog is seeded and held to the end, against the same drain without it. The
claim's cost is read from `pg_statio_user_tables` (heap + index buffers of the outbox table), after the
relay has exited (a backend flushes its statistics when it exits), per claim of `batch` events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.infra import Child, Stack, seed_backlog, txoutbox
from txoutbox.ops import outbox_count

_BUFFERS = """
SELECT coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0) + coalesce(idx_blks_hit, 0)
       + coalesce(idx_blks_read, 0)
FROM pg_statio_user_tables WHERE schemaname = 'txoutbox' AND relname = 'outbox'
"""


@dataclass
class PinnedResult:
    pinned: bool
    events: int
    tail_events: int
    tail_seconds: float
    tail_events_per_s: float
    total_seconds: float
    buffers_per_claim: float


def _buffers(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_BUFFERS).fetchone()
    return int(row[0]) if row else 0


def _gone_at(conn: psycopg.Connection[Any], row_id: int, start: float, timeout: float, label: str) -> float:
    """When the row `row_id` was found deleted (polled every 5 ms)."""
    while conn.execute("SELECT 1 FROM txoutbox.outbox WHERE id = %s", (row_id,)).fetchone():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{label}: event {row_id} still in the outbox after {timeout} s")
        time.sleep(0.005)
    return time.monotonic()


def drain_pinned(
    stack: Stack,
    logdir: Path,
    *,
    pinned: bool,
    label: str,
    events: int = 300_000,
    tail: int = 100_000,
    batch: int = 500,
    timeout: float = 300.0,
) -> PinnedResult:
    stack.truncate()
    seed_backlog(stack.database_url, events)
    holder: psycopg.Connection[Any] | None = None
    if pinned:
        holder = psycopg.connect(stack.database_url)
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM txoutbox.relays")  # the snapshot is taken here and kept
    relay = Child(
        txoutbox("relay", "--null-publisher"),
        stack.env(),
        logdir / f"{label}-relay.log",
        ready_line="started:",
    )
    try:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            before = _buffers(conn)
            relay.wait_ready()
            start = relay.ready_at or time.monotonic()
            # Progress by point lookups on the primary key (claims go in id order): a count(*) would scan
            # the 300,000 dead heap tuples of the pinned run on every poll and slow the relay it watches.
            tail_from = _gone_at(conn, events - tail, start, timeout, label)
            _gone_at(conn, events, start, timeout, label)
            while (left := outbox_count(conn)) > 0:
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"{label}: {left} events still in the outbox after {timeout} s")
                time.sleep(0.005)
            end = time.monotonic()
            relay.stop()
            time.sleep(0.2)
            used = _buffers(conn) - before
    finally:
        relay.stop()
        if holder is not None:
            holder.close()
    tail_seconds = end - tail_from
    return PinnedResult(
        pinned=pinned,
        events=events,
        tail_events=tail,
        tail_seconds=tail_seconds,
        tail_events_per_s=tail / tail_seconds,
        total_seconds=end - start,
        buffers_per_claim=used / max(events / batch, 1),
    )
