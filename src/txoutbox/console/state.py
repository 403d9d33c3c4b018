"""What the console's routes share: the settings, a small autocommit pool, the samples and relay rates."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from txoutbox import queries
from txoutbox.config import Settings
from txoutbox.connections import KEEPALIVES
from txoutbox.console import queries as console_queries
from txoutbox.console.sampler import Point, RelayRates, Series
from txoutbox.redact import redact

log = logging.getLogger("txoutbox.console")


class ConsoleState:
    """What the routes share: the settings, a small autocommit pool, the samples and the relays' rates."""

    def __init__(self, settings: Settings, sample_seconds: float) -> None:
        self.settings = settings
        self.sample_seconds = sample_seconds
        self.pool: ConnectionPool[Any] = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5, **KEEPALIVES},
            open=False,
            timeout=5,
            name="console",
        )
        self.series = Series(every_seconds=sample_seconds)
        self.rates = RelayRates()
        self.database_error: str | None = None

    @property
    def relay_params(self) -> dict[str, float]:
        return {"live_within_seconds": 3 * self.settings.relay.heartbeat_seconds}

    def sample(self) -> None:
        """One look at the database: a point for the charts and the relays' counters for their rates."""
        with self.pool.connection() as conn:
            stats = conn.execute(queries.OUTBOX_STATS).fetchone() or {}
            relays = conn.execute(console_queries.RELAYS, self.relay_params).fetchall()
        self.rates.update(relays)
        backlog = int(stats.get("backlog") or 0)
        self.series.add(
            Point(
                t=time.time(),
                backlog=backlog,
                oldest_age_seconds=float(stats.get("oldest_age_seconds") or 0.0) if backlog else 0.0,
                publish_rate=self.rates.total(str(r["relay_id"]) for r in relays if r["live"]),
            )
        )

    async def run_sampler(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
                if self.database_error is not None:
                    log.info("console: database reachable again")
                self.database_error = None
            except (psycopg.Error, PoolTimeout) as exc:  # the loop outlives any database trouble
                if self.database_error is None:
                    log.warning("console: cannot sample the database: %s", first_line(exc))
                self.database_error = first_line(exc)
            await asyncio.sleep(self.sample_seconds)


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (psycopg's are several lines long), without passwords."""
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
