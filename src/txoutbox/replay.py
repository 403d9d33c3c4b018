"""Read and replay the archive of published events (`txoutbox published list`, `txoutbox replay`).

A replay publishes archived events again, to a FIFO queue named on the command line, in their original
order per aggregate (outbox id order; one message per aggregate per batch, and a replay stops at its first
refused message, so nothing of an aggregate ever overtakes an earlier event). Every message carries the
attribute `txoutbox-replay=1`, so consumers can tell: their inbox treats a replayed event they already
handled as a duplicate unless they are built with `reprocess_replayed=True`. Each run deduplicates on its
own id (`<event id>-<run>`): SQS drops a batch retried within one run, never a later, deliberate replay.
The archive is read in pages, each in a short statement of its own: no transaction is open while sending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from txoutbox import queries
from txoutbox.errors import TxOutboxError
from txoutbox.publishers import OutgoingMessage, Publisher
from txoutbox.wire import REPLAY_ATTRIBUTE, encode

Row = dict[str, Any]
PAGE = 500


@dataclass(frozen=True, slots=True)
class Selection:
    """Which archived events; every field optional. Times are the events' own (`created_at`): since <= t
    < until."""

    aggregate_type: str | None = None
    aggregate_id: str | None = None
    event_type: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def params(self, after_id: int = 0, limit: int = PAGE) -> dict[str, Any]:
        return {
            "after_id": after_id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "event_type": self.event_type,
            "since": self.since,
            "until": self.until,
            "limit": limit,
        }


@dataclass(slots=True)
class ReplayResult:
    selected: int = 0
    sent: int = 0
    run_id: str = ""


class ReplayStopped(TxOutboxError):
    """The queue refused a message: the replay stopped there (everything before it was sent)."""


def list_published(conn: psycopg.Connection[Row], selection: Selection, limit: int = 100) -> list[Row]:
    """Archived events matching `selection`, oldest first."""
    return conn.execute(queries.PUBLISHED_LIST, selection.params(limit=limit)).fetchall()


def count_published(conn: psycopg.Connection[Row], selection: Selection) -> int:
    row = conn.execute(queries.PUBLISHED_COUNT, selection.params()).fetchone()
    return int(row["n"]) if row else 0


async def _pages(database_url: str, selection: Selection) -> AsyncIterator[list[Row]]:
    """The selected events with their payloads, page by page (autocommit: no transaction stays open)."""
    after = 0
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row, connect_timeout=5
    ) as conn:
        while True:
            cur = await conn.execute(queries.PUBLISHED_FOR_REPLAY, selection.params(after))
            rows = await cur.fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1]["id"]


def _message(row: Row, message_format: str, source: str, run_id: str) -> OutgoingMessage:
    body = encode(
        message_format,
        row_id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        occurred_at=row["created_at"],
        payload_json=row["payload"],
        source=source,
    )
    return OutgoingMessage(
        row["id"],
        row["event_id"],
        row["aggregate_type"],
        row["aggregate_id"],
        row["event_type"],
        body,
        attributes={REPLAY_ATTRIBUTE: "1"},
        deduplication_id=f"{row['event_id'].hex}-{run_id}",
    )


def _batches(messages: list[OutgoingMessage], publisher: Publisher) -> list[list[OutgoingMessage]]:
    """In order; a new batch at the entry or byte limit, or when an aggregate comes again (so a refused
    message never has a later event of its aggregate sent beside it)."""
    batches: list[list[OutgoingMessage]] = []
    current: list[OutgoingMessage] = []
    groups: set[tuple[str, str]] = set()
    size = 0
    for m in messages:
        group = (m.aggregate_type, m.aggregate_id)
        if current and (
            len(current) == publisher.max_batch_entries
            or size + m.size > publisher.max_batch_bytes
            or group in groups
        ):
            batches.append(current)
            current, groups, size = [], set(), 0
        current.append(m)
        groups.add(group)
        size += m.size
    if current:
        batches.append(current)
    return batches


async def replay(
    database_url: str,
    publisher: Publisher,
    selection: Selection,
    *,
    message_format: str = "envelope",
    source: str = "/txoutbox",
    rate: float | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> ReplayResult:
    """Publish the selected archived events again; `rate` caps messages per second; `progress(n)` after
    every batch. ReplayStopped (after what was sent) at the first refused message."""
    result = ReplayResult(run_id=uuid.uuid4().hex[:12])
    started = time.monotonic()
    async for rows in _pages(database_url, selection):
        result.selected += len(rows)
        messages = [_message(r, message_format, source, result.run_id) for r in rows]
        for batch in _batches(messages, publisher):
            refused = [(i, f) for i, m in enumerate(batch) if (f := publisher.check(m)) is not None]
            failures = refused or [(f.index, f) for f in await publisher.send_batch(batch)]
            if failures:
                index, failure = min(failures, key=lambda x: x[0])
                sent = len(batch) - len(failures) if not refused else 0
                result.sent += sent
                raise ReplayStopped(
                    f"the queue refused event {batch[index].event_id} (outbox id {batch[index].row_id}): "
                    f"{failure.reason}; {result.sent} events were replayed before it stopped"
                )
            result.sent += len(batch)
            progress(len(batch))
            if rate:
                # Pace by the total so far: a slow batch is not followed by a burst beyond the rate.
                await asyncio.sleep(max(0.0, started + result.sent / rate - time.monotonic()))
    return result
