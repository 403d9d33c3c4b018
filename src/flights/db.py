"""The booking service's database: one pool (from `txoutbox.connections`) and the one retry on a dead
connection that every route uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from txoutbox.connections import open_pool

log = logging.getLogger("flights")

POOL_MAX_SIZE = 20
POOL_WAIT_SECONDS = 5.0  # a request waiting longer than this for a connection gets a 503
T = TypeVar("T")


class CommitOutcomeUnknown(psycopg.OperationalError):
    """The connection failed while COMMIT was on its way: the work may be stored, so it is never repeated."""


class Database:
    """The pool, opened and closed with the app, and `run`, the one way routes use a connection."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo  # "" lets libpq's PGHOST & co. decide
        self._pool: AsyncConnectionPool[Any] | None = None

    async def open(self) -> None:
        self._pool = await open_pool(self.conninfo, max_size=POOL_MAX_SIZE, name="flights")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise psycopg.OperationalError("the connection pool is not open")
        return self._pool

    async def run(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, wait: float | None = None
    ) -> T:
        """Run `work` on a pooled connection; once more on a fresh one if that one turned out dead.

        A database restart or a failover leaves dead connections in the pool; the first request on each
        would fail although the database is back. Repeating is safe because a dead connection stored
        nothing: `work` either only reads, or raises CommitOutcomeUnknown when it failed during COMMIT.
        """
        for attempt in (0, 1):
            async with self.pool.connection(timeout=wait or POOL_WAIT_SECONDS) as conn:
                try:
                    return await work(conn)
                except psycopg.OperationalError as exc:
                    if attempt or not conn.broken or isinstance(exc, CommitOutcomeUnknown):
                        raise
                    log.info("the pooled connection was dead; retrying on a fresh one")
            await self.pool.check()
        raise AssertionError("unreachable")
