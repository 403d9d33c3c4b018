"""LISTEN for commits on a connection of its own, reconnecting forever: notifications only wake the
workers (they always re-query), so a lost notification costs at most one poll interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from txoutbox import queries
from txoutbox.connections import DB_ERRORS, KEEPALIVES, DbTimeouts

log = logging.getLogger("txoutbox.relay")


async def listen(
    database_url: str, wake: asyncio.Event, check_seconds: float, stopping: Callable[[], bool]
) -> None:
    """Set `wake` on every notification (and on every (re)connection) until `stopping()`."""
    delay = 0.1
    reported: str | None = None
    while not stopping():
        try:
            async with await psycopg.AsyncConnection.connect(
                DbTimeouts.from_env().apply(database_url), autocommit=True, **KEEPALIVES
            ) as conn:
                await conn.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
                wake.set()  # anything committed while we were not listening
                delay = 0.1
                while not stopping():
                    async for _ in conn.notifies(timeout=check_seconds):
                        wake.set()
                    await conn.execute("SELECT 1")  # a dead connection shows itself here
        except DB_ERRORS as exc:
            log.debug("listener connection lost (%s); reconnecting in %.1f s", exc, delay)
        except psycopg.Error as exc:  # not a lost connection (LISTEN refused, ...): say it once
            if exc.sqlstate != reported:
                reported = exc.sqlstate
                log.error(
                    "relay listener failed (%s, SQLSTATE %s); polling meanwhile",
                    type(exc).__name__,
                    exc.sqlstate,
                )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
