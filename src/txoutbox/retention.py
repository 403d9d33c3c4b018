"""Retention of published events: daily partitions of `txoutbox.published`, created ahead, dropped whole.

With `TXOUTBOX_RETENTION_DAYS=N` (N > 0) the relay's acknowledgement moves published events into
`txoutbox.published` instead of deleting them, and `maintain` (run hourly by every relay, and by
`txoutbox retention`) keeps one partition per UTC day: the next `AHEAD_DAYS` days exist before any event
needs them, and a day is dropped (`DROP TABLE`, never row-by-row deletes) once all of it is older than N days.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from txoutbox import queries
from txoutbox.connections import DB_ERRORS

log = logging.getLogger("txoutbox.retention")

AHEAD_DAYS = 3  # partitions made this many days ahead: the relay's hourly job has days to catch up
EVERY_SECONDS = 3600.0  # how often each relay runs `maintain`
PREFIX = "published_p"


@dataclass(slots=True)
class RetentionReport:
    """What one maintenance pass did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    default_rows: int = 0  # rows in the default partition after the pass (normally 0)
    skipped: bool = False  # another maintainer held the lock


def partition_name(day: dt.date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def day_of(name: str) -> dt.date | None:
    """The day a partition holds, from its name; None for a name this module did not make."""
    try:
        return dt.datetime.strptime(name.removeprefix(PREFIX), "%Y%m%d").date()
    except ValueError:
        return None


def plan(
    existing: Sequence[str], days: int, today: dt.date, stray: Sequence[dt.date] = ()
) -> tuple[list[dt.date], list[str]]:
    """(days to create, partitions to drop): yesterday to `AHEAD_DAYS` ahead, plus the `stray` days the
    default partition caught; a day is dropped once its end is `days` days in the past."""
    wanted = sorted({*(today + dt.timedelta(n) for n in range(-1, AHEAD_DAYS + 1)), *stray})
    create = [d for d in wanted if partition_name(d) not in set(existing)]
    cutoff = today - dt.timedelta(days)
    names = [*existing, *map(partition_name, create)]
    drop = [name for name in names if (day := day_of(name)) is not None and day + dt.timedelta(1) <= cutoff]
    return create, drop


def _bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime.combine(day, dt.time(), dt.UTC)
    return lo, lo + dt.timedelta(1)


def _statements(day: dt.date, stray: bool) -> list[tuple[sql.SQL | sql.Composed, dict[str, Any] | None]]:
    """Create one day's partition; for a `stray` day, move in the rows the default partition caught."""
    lo, hi = _bounds(day)
    create = sql.SQL(queries.CREATE_PUBLISHED_PARTITION).format(
        name=sql.Identifier(partition_name(day)), lo=sql.Literal(lo), hi=sql.Literal(hi)
    )
    if not stray:
        return [(create, None)]
    return [
        (sql.SQL(queries.DETACH_PUBLISHED_DEFAULT), None),
        (create, None),
        (sql.SQL(queries.MOVE_FROM_PUBLISHED_DEFAULT), {"lo": lo, "hi": hi}),
        (sql.SQL(queries.ATTACH_PUBLISHED_DEFAULT), None),
    ]


def _drop(name: str) -> sql.Composed:
    return sql.SQL(queries.DROP_PUBLISHED_PARTITION).format(name=sql.Identifier(name))


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def maintain(conn: psycopg.Connection[Any], days: int, *, today: dt.date | None = None) -> RetentionReport:
    """One pass on an autocommit connection: create the coming days' partitions, drop expired ones."""
    report = RetentionReport()
    with conn.transaction():
        conn.execute(queries.RETENTION_LOCK_TIMEOUT)
        row = conn.execute(queries.RETENTION_LOCK).fetchone()
        if not row or not _first(row):
            report.skipped = True
            return report
        conn.execute(queries.LOCK_PUBLISHED_DEFAULT)
        existing = [_first(r) for r in conn.execute(queries.PUBLISHED_PARTITIONS).fetchall()]
        stray = [_first(r) for r in conn.execute(queries.PUBLISHED_DEFAULT_DAYS).fetchall()]
        create, drop = plan(existing, days, today or _today(), stray)
        for day in create:
            for statement, params in _statements(day, day in stray):
                conn.execute(statement, params)
            report.created.append(partition_name(day))
        for name in drop:
            conn.execute(_drop(name))
            report.dropped.append(name)
        count = conn.execute(queries.PUBLISHED_DEFAULT_COUNT).fetchone()
        report.default_rows = int(_first(count)) if count else 0
    _log(report)
    return report


async def maintain_async(
    conn: psycopg.AsyncConnection[Any], days: int, *, today: dt.date | None = None
) -> RetentionReport:
    """`maintain` for the relay's asynchronous connections."""
    report = RetentionReport()
    async with conn.transaction():
        await conn.execute(queries.RETENTION_LOCK_TIMEOUT)
        row = await (await conn.execute(queries.RETENTION_LOCK)).fetchone()
        if not row or not _first(row):
            report.skipped = True
            return report
        await conn.execute(queries.LOCK_PUBLISHED_DEFAULT)
        cur = await conn.execute(queries.PUBLISHED_PARTITIONS)
        existing = [_first(r) for r in await cur.fetchall()]
        cur = await conn.execute(queries.PUBLISHED_DEFAULT_DAYS)
        stray = [_first(r) for r in await cur.fetchall()]
        create, drop = plan(existing, days, today or _today(), stray)
        for day in create:
            for statement, params in _statements(day, day in stray):
                await conn.execute(statement, params)
            report.created.append(partition_name(day))
        for name in drop:
            await conn.execute(_drop(name))
            report.dropped.append(name)
        count = await (await conn.execute(queries.PUBLISHED_DEFAULT_COUNT)).fetchone()
        report.default_rows = int(_first(count)) if count else 0
    _log(report)
    return report


def _first(row: Any) -> Any:
    """The first column of a row, whatever the connection's row factory (tuples or dicts)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _log(report: RetentionReport) -> None:
    if report.dropped:
        log.info("retention: dropped %s", ", ".join(report.dropped))
    if report.default_rows:
        log.warning(
            "retention: %d published events are still in txoutbox.published_default",
            report.default_rows,
        )


async def run_every(
    maintain: Callable[[], Awaitable[RetentionReport]], *, every_seconds: float = EVERY_SECONDS
) -> None:
    """The relay's side job: `maintain` now and then every `every_seconds` (cancelled at shutdown)."""
    while True:
        try:
            await maintain()
        except DB_ERRORS as exc:
            log.warning("retention: maintenance failed (%s); trying again in %.0f s", exc, every_seconds)
        await asyncio.sleep(every_seconds)
