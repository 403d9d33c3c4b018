"""The writer API inside the caller's transaction: psycopg and SQLAlchemy, sync and async."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from tests.helpers import write_in_thread
from txoutbox import Event, InvalidEventError, TxOutboxError, add_event, add_event_async, add_events

EVENT_COLUMNS = (
    "SELECT event_id, aggregate_type, aggregate_id, event_type, payload FROM txoutbox.outbox ORDER BY id"
)


def _events(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(EVENT_COLUMNS).fetchall()


def test_psycopg_event_commits_with_the_callers_data(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    event = Event("Order", "42", "OrderPlaced", {"total": 10})
    with psycopg.connect(database_url) as c:
        assert add_event(c, event) == event.event_id
        assert _events(conn) == []  # not committed by add_event
    assert _events(conn) == [(event.event_id, "Order", "42", "OrderPlaced", {"total": 10})]


def test_psycopg_rollback_drops_the_event(database_url: str, conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(database_url) as c:
        add_events(c, [Event("Order", "1", "A", {}), Event("Order", "1", "B", {})])
        c.rollback()
    assert _events(conn) == []


def test_autocommit_connection_outside_a_transaction_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TxOutboxError, match="needs an open transaction"):
        add_event(conn, Event("Order", "1", "A", {}))
    with conn.transaction():
        add_event(conn, Event("Order", "1", "A", {}))
    assert len(_events(conn)) == 1


async def test_psycopg_async(database_url: str, conn: psycopg.Connection[Any]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        await add_event_async(c, Event("Order", "7", "OrderPlaced", {"n": 1}))
        await c.rollback()
        await add_event_async(c, Event("Order", "7", "OrderPlaced", {"n": 2}))
        await c.commit()
    assert [row[4] for row in _events(conn)] == [{"n": 2}]


def _sqlalchemy_url(database_url: str, driver: str) -> str:
    return database_url.replace("postgresql://", f"postgresql+{driver}://", 1)


def test_sqlalchemy_session(database_url: str, conn: psycopg.Connection[Any]) -> None:
    engine = sa.create_engine(_sqlalchemy_url(database_url, "psycopg"))
    with Session(engine) as session:
        add_event(session, Event("Order", "9", "OrderPlaced", {"n": 1}))
        session.rollback()
        with session.begin():
            add_event(session, Event("Order", "9", "OrderPlaced", {"n": 2}))
    engine.dispose()
    assert [row[4] for row in _events(conn)] == [{"n": 2}]


async def test_sqlalchemy_async_session(database_url: str, conn: psycopg.Connection[Any]) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(_sqlalchemy_url(database_url, "psycopg"))
    async with AsyncSession(engine) as session, session.begin():
        await add_event_async(session, Event("Order", "9", "OrderPlaced", {"n": 3}))
    await engine.dispose()
    assert [row[4] for row in _events(conn)] == [{"n": 3}]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (Event("", "1", "A", {}), "aggregate_type"),
        (Event("Order", "has space", "A", {}), "aggregate_id"),
        (Event("Order", "x" * 129, "A", {}), "aggregate_id"),
        (Event("Order", "1", " ", {}), "event_type"),
        (Event("Order", "1", "A", "not an object"), "payload"),  # type: ignore[arg-type]
        (Event("Order", "1", "A", {"when": object()}), "payload"),
    ],
)
def test_invalid_events_are_refused_naming_the_field(
    conn: psycopg.Connection[Any], event: Event, field: str
) -> None:
    with conn.transaction(), pytest.raises(InvalidEventError, match=field):
        add_event(conn, event)
    assert _events(conn) == []


def test_writers_of_one_aggregate_commit_in_id_order(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The second writer of an aggregate waits for the first: ids follow commit order (the relay's order)."""
    first = psycopg.connect(database_url)
    add_event(first, Event("Order", "same", "First", {}))  # holds the aggregate's lock until commit
    thread, done = write_in_thread(database_url, "same", "Second")
    assert not done.wait(0.5), "the second writer of the aggregate did not wait for the first"
    first.commit()
    first.close()
    thread.join(10)
    assert done.is_set()
    assert [row[3] for row in _events(conn)] == ["First", "Second"]


def _colliding_pairs(conn: psycopg.Connection[Any], pairs: int) -> list[tuple[str, str]]:
    """Pairs of unrelated aggregate ids that shared a lock bucket under the old 1,024-bucket hashing."""
    rows = conn.execute(
        """
        SELECT min(id), max(id) FROM (
            SELECT 'a' || n AS id, hashtext('Order:a' || n) & 1023 AS bucket
            FROM generate_series(1, 5000) AS n
        ) AS s GROUP BY bucket HAVING count(*) > 1 ORDER BY bucket LIMIT %s
        """,
        (pairs,),
    ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_writers_of_unrelated_aggregates_never_wait_or_deadlock(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Two transactions, four unrelated aggregates in opposite order across separate calls: no wait.

    Under the old hashed lock buckets, a1/a2 and b1/b2 shared buckets: T1 held a1's bucket and waited for
    b1's, T2 held b2's and waited for a2's: a deadlock, one of them aborted by PostgreSQL.
    """
    (a1, a2), (b1, b2) = _colliding_pairs(conn, 2)
    t1 = psycopg.connect(database_url)
    t2 = psycopg.connect(database_url)
    try:
        for c in (t1, t2):
            c.execute("SET lock_timeout = '10s'")  # a bug ends the test as an error, never as a hang
        add_event(t1, Event("Order", a1, "A", {}))
        add_event(t2, Event("Order", b2, "B", {}))
        failures: list[BaseException] = []

        def call(c: psycopg.Connection[Any], aggregate: str) -> None:
            try:
                add_event(c, Event("Order", aggregate, "X", {}))
            except psycopg.Error as exc:
                failures.append(exc)

        thread = threading.Thread(target=call, args=(t1, b1))
        thread.start()
        call(t2, a2)
        thread.join(15)
        assert failures == []  # old buckets: psycopg.errors.DeadlockDetected in one of the two
        waited = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        assert waited == (0,)
        t1.commit()
        t2.commit()
    finally:
        t1.close()
        t2.close()
    assert sorted(row[2] for row in _events(conn)) == sorted([a1, a2, b1, b2])


def test_bulk_write_of_20000_aggregates_does_not_stall_a_booking(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    bulk = psycopg.connect(database_url)
    try:
        add_events(bulk, [Event("Order", f"bulk-{n}", "Imported", {"n": n}) for n in range(20_000)])
        # The bulk transaction is still open, holding the locks of its 20,000 aggregates.
        with psycopg.connect(database_url) as booking:
            booking.execute("SET lock_timeout = '3s'")  # waiting on the bulk write fails the test
            add_event(booking, Event("Flight", "booking-1", "FlightBooked", {"id": 1}))
        assert [row[2] for row in _events(conn)] == ["booking-1"]
        bulk.commit()
    finally:
        bulk.close()
    row = conn.execute("SELECT count(*), count(DISTINCT aggregate_id) FROM txoutbox.outbox").fetchone()
    assert row == (20_001, 20_001)
    # The lock rows stay behind for the relays to prune (tests/integration/test_writer_locks.py).
    locks = conn.execute("SELECT count(*) FROM txoutbox.aggregate_locks").fetchone()
    assert locks == (20_001,)
