"""Operator actions behind the CLI: read and repair the outbox without writing SQL."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from txoutbox import queries
from txoutbox.connections import DbTimeouts
from txoutbox.errors import NotFoundError

Row = dict[str, Any]


def connect(database_url: str) -> psycopg.Connection[Row]:
    """An autocommit connection for operator commands, rows as dicts."""
    conninfo = DbTimeouts(connect_seconds=5).apply(database_url)  # statement and lock timeouts too
    return psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)


def outbox_count(conn: psycopg.Connection[Any]) -> int:
    """Events in the outbox (waiting or being published), on any connection whatever its row factory."""
    row = conn.cursor(row_factory=tuple_row).execute(queries.OUTBOX_COUNT).fetchone()
    return int(row[0]) if row else 0


def outbox_list(
    conn: psycopg.Connection[Row], *, stuck: bool = False, stuck_after_seconds: float = 60, limit: int = 100
) -> list[Row]:
    return conn.execute(
        queries.OUTBOX_LIST, {"stuck_only": stuck, "stuck_after_seconds": stuck_after_seconds, "limit": limit}
    ).fetchall()


def outbox_retry(conn: psycopg.Connection[Row], event_id: int | None) -> list[int]:
    """Make one waiting event (or all) due now; NotFoundError for an id not in the outbox."""
    if event_id is not None and conn.execute(queries.OUTBOX_EXISTS, {"id": event_id}).fetchone() is None:
        raise NotFoundError(f"no event with id {event_id} in the outbox")
    rows = conn.execute(queries.RETRY_NOW, {"all": event_id is None, "id": event_id or 0}).fetchall()
    if rows:
        conn.execute(queries.NOTIFY)  # relays pick them up now, not at their next poll
    return [int(r["id"]) for r in rows]


def dead_letters_list(conn: psycopg.Connection[Row], limit: int = 100) -> list[Row]:
    return conn.execute(queries.DEAD_LETTER_LIST, {"limit": limit}).fetchall()


def dead_letter_show(conn: psycopg.Connection[Row], event_id: int) -> Row:
    row = conn.execute(queries.DEAD_LETTER_SHOW, {"id": event_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no dead letter with id {event_id}")
    return row


def dead_letters_retry(conn: psycopg.Connection[Row], event_id: int | None) -> list[int]:
    """Put one dead letter (or all) back into the outbox, due now, in its original place."""
    rows = conn.execute(queries.DEAD_LETTER_RETRY, {"all": event_id is None, "id": event_id or 0}).fetchall()
    if event_id is not None and not rows:
        raise NotFoundError(f"no dead letter with id {event_id}")
    if rows:
        conn.execute(queries.NOTIFY)
    return [int(r["id"]) for r in rows]


def dead_letter_discard(conn: psycopg.Connection[Row], event_id: int) -> None:
    if conn.execute(queries.DEAD_LETTER_DISCARD, {"id": event_id}).fetchone() is None:
        raise NotFoundError(f"no dead letter with id {event_id}")
    conn.execute(queries.NOTIFY)  # the aggregate's later events may flow now
