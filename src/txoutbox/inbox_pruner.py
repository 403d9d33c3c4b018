"""The consumer's inbox upkeep: processed event ids older than the retention window are deleted.

An id must be kept as long as SQS may still deliver its message again: a FIFO message lives at most the
queue's retention period, and a dead-lettered one keeps its original enqueue time in the DLQ, so no copy
outlives the DLQ's retention (14 days at most on SQS). The default window, 15 days, is longer than that.
Pruning runs on its own task, in small batches (one short transaction each), never in the receive path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from txoutbox import queries
from txoutbox.connections import DB_ERRORS

log = logging.getLogger("txoutbox.consumer")

DEFAULT_RETENTION_DAYS = 15.0
PRUNE_BATCH = 1_000  # rows per DELETE: a short transaction
PRUNE_INTERVAL_SECONDS = 600.0


class InboxPruner:
    """Deletes one consumer's expired inbox rows, `batch` at a time, every `interval` seconds."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        consumer: str,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        *,
        batch: int = PRUNE_BATCH,
        interval: float = PRUNE_INTERVAL_SECONDS,
    ) -> None:
        if retention_days <= 0:
            raise ValueError("inbox retention must be a positive number of days")
        self.pool = pool
        self.consumer = consumer
        self.retention_seconds = retention_days * 86_400.0
        self.batch = batch
        self.interval = interval

    async def prune(self, stop: asyncio.Event | None = None) -> int:
        """Delete every expired row, batch by batch; return how many were deleted."""
        total = 0
        while stop is None or not stop.is_set():
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    queries.INBOX_PRUNE,
                    {
                        "consumer": self.consumer,
                        "older_than_seconds": self.retention_seconds,
                        "batch": self.batch,
                    },
                )
            total += cur.rowcount
            if cur.rowcount < self.batch:
                break
            await asyncio.sleep(0)  # let the receivers run between batches
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then every `interval` seconds until `stop` is set; a database outage only delays it."""
        while not stop.is_set():
            try:
                deleted = await self.prune(stop)
                if deleted:
                    log.info(
                        "%s inbox: %d processed ids past their retention deleted", self.consumer, deleted
                    )
            except DB_ERRORS as exc:
                log.debug("inbox pruning deferred (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
