"""The writer API: add events to the outbox inside the CALLER's transaction. It never commits.

Supported connections (duck-typed, nothing is imported unless you use it):
psycopg 3 `Connection` / `Cursor` and `AsyncConnection` / `AsyncCursor`; SQLAlchemy 2 `Session` /
`Connection` and `AsyncSession` / `AsyncConnection` (on any PostgreSQL driver).

    with psycopg.connect(url) as conn:          # one transaction
        conn.execute("INSERT INTO orders ...")
        txoutbox.add_event(conn, Event("Order", "42", "OrderPlaced", {"total": 10}))
    # commit: the order and its event are stored together, or neither is
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from txoutbox import queries
from txoutbox.errors import TxOutboxError
from txoutbox.event import Event
from txoutbox.tracing import current_trace_context

# (new_aggregate, notify) -> the statement, in psycopg's and in SQLAlchemy's placeholder style.
_STATEMENTS = {
    (False, False): queries.INSERT_EVENTS,
    (False, True): queries.INSERT_EVENTS_AND_NOTIFY,
    (True, False): queries.INSERT_EVENTS_NEW_AGGREGATES,
    (True, True): queries.INSERT_EVENTS_NEW_AGGREGATES_AND_NOTIFY,
}
# One event of a new aggregate, with plain parameters (notify -> the statement).
_ONE_NEW = {False: queries.INSERT_EVENT_NEW_AGGREGATE, True: queries.INSERT_EVENT_NEW_AGGREGATE_AND_NOTIFY}
_SQLA_STATEMENTS = {key: queries.as_sqlalchemy(sql) for key, sql in _STATEMENTS.items()}
_SQLA_ONE_NEW = {key: queries.as_sqlalchemy(sql) for key, sql in _ONE_NEW.items()}


def _statement(
    params: dict[str, Any], notify: bool, new_aggregate: bool, *, sqlalchemy: bool
) -> tuple[str, dict[str, Any]]:
    """The statement for these events and its parameters, in the driver's placeholder style."""
    if new_aggregate and len(params["event_ids"]) == 1:
        one = {
            "event_id": params["event_ids"][0],
            "aggregate_type": params["aggregate_types"][0],
            "aggregate_id": params["aggregate_ids"][0],
            "event_type": params["event_types"][0],
            "payload": params["payloads"][0],
            "payload_size": params["payload_bytes"][0],
            "traceparent": params["traceparent"],
            "tracestate": params["tracestate"],
        }
        return (_SQLA_ONE_NEW if sqlalchemy else _ONE_NEW)[notify], one
    return (_SQLA_STATEMENTS if sqlalchemy else _STATEMENTS)[new_aggregate, notify], params


def _params(events: Iterable[Event]) -> tuple[dict[str, Any], list[uuid.UUID]]:
    ids: list[uuid.UUID] = []
    params: dict[str, Any] = {
        "event_ids": ids,
        "aggregate_types": [],
        "aggregate_ids": [],
        "event_types": [],
        "payloads": [],
        "payload_bytes": [],  # sizes stated by the writer: the server does not re-serialise (migration 0010)
    }
    for event in events:
        if not isinstance(event, Event):
            raise TypeError(f"expected txoutbox.Event, got {type(event).__name__}")
        payload = event.validate()
        ids.append(event.event_id)
        params["aggregate_types"].append(event.aggregate_type)
        params["aggregate_ids"].append(event.aggregate_id)
        params["event_types"].append(event.event_type)
        params["payloads"].append(payload.decode())
        params["payload_bytes"].append(len(payload))
    # The writer's trace context, for the relay's and the consumer's spans (None without OpenTelemetry).
    params["traceparent"], params["tracestate"] = current_trace_context()
    return params, ids


def _kind(conn: object) -> str:
    """'psycopg' or 'sqlalchemy', from the object's module: no import of either library needed."""
    module = type(conn).__module__
    if module.startswith("psycopg"):
        return "psycopg"
    if module.startswith("sqlalchemy"):
        return "sqlalchemy"
    raise TypeError(
        f"unsupported connection type {type(conn).__module__}.{type(conn).__qualname__}: pass a psycopg 3 "
        "connection or cursor, or a SQLAlchemy 2 Session or Connection"
    )


def _require_transaction(conn: Any) -> None:
    # An autocommit psycopg connection outside `conn.transaction()` would commit the event on its own,
    # apart from the caller's data: exactly what an outbox exists to prevent.
    connection = getattr(conn, "connection", conn)
    if getattr(connection, "autocommit", False) and connection.info.transaction_status == 0:  # IDLE
        raise TxOutboxError(
            "add_event needs an open transaction: the connection is in autocommit mode; "
            "wrap the writes in `with conn.transaction():`"
        )


def add_events(
    conn: Any, events: Iterable[Event], *, notify: bool = True, new_aggregate: bool = False
) -> list[uuid.UUID]:
    """Add events to the outbox in the caller's (synchronous) transaction; return their event ids.

    `notify=True` wakes listening relays at commit (PostgreSQL NOTIFY); with `False` they find the
    events at their next poll. `new_aggregate=True` is for events of aggregates this same transaction
    created (no other transaction can see them yet, so none can write their events concurrently): the
    per-aggregate lock is skipped. Passing it for an aggregate others may write can break its order.
    """
    params, ids = _params(events)
    if not ids:
        return ids
    if _kind(conn) == "psycopg":
        _require_transaction(conn)
        # One statement: the aggregates' lock rows, then the events (see queries.INSERT_EVENTS).
        conn.execute(*_statement(params, notify, new_aggregate, sqlalchemy=False))
    else:
        from sqlalchemy import text

        sql, args = _statement(params, notify, new_aggregate, sqlalchemy=True)
        conn.execute(text(sql), args)
    return ids


def add_event(conn: Any, event: Event, *, notify: bool = True, new_aggregate: bool = False) -> uuid.UUID:
    """Add one event in the caller's transaction; return its event id (options: see `add_events`)."""
    return add_events(conn, [event], notify=notify, new_aggregate=new_aggregate)[0]


async def add_events_async(
    conn: Any, events: Iterable[Event], *, notify: bool = True, new_aggregate: bool = False
) -> list[uuid.UUID]:
    """Like `add_events`, for psycopg `AsyncConnection`/`AsyncCursor` and SQLAlchemy `AsyncSession`."""
    params, ids = _params(events)
    if not ids:
        return ids
    if _kind(conn) == "psycopg":
        _require_transaction(conn)
        await conn.execute(*_statement(params, notify, new_aggregate, sqlalchemy=False))
    else:
        from sqlalchemy import text

        sql, args = _statement(params, notify, new_aggregate, sqlalchemy=True)
        await conn.execute(text(sql), args)
    return ids


async def add_event_async(
    conn: Any, event: Event, *, notify: bool = True, new_aggregate: bool = False
) -> uuid.UUID:
    """Add one event in the caller's asynchronous transaction; return its event id (see `add_events`)."""
    return (await add_events_async(conn, [event], notify=notify, new_aggregate=new_aggregate))[0]
