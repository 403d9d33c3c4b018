"""Events of an aggregate created in the same transaction skip the aggregate lock (`new_aggregate=True`)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flights.app import create_app
from tests.helpers import db_only_settings
from tests.integration.test_flights_api import PARIS_LONDON
from txoutbox import Event, add_event, add_event_async, add_events

LOCKS = "SELECT aggregate_id FROM txoutbox.aggregate_locks ORDER BY aggregate_id"
EVENTS = "SELECT aggregate_id, event_type FROM txoutbox.outbox ORDER BY id"


def _locks(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(LOCKS).fetchall()]


async def test_new_aggregates_take_no_lock_row_on_every_writer_path(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url) as c:
        add_events(
            c,
            [Event("Order", "new-1", "Placed", {}), Event("Order", "new-1", "Paid", {})],
            new_aggregate=True,
        )
        add_event(c, Event("Order", "old-1", "Placed", {}))  # the default path still locks
    async with await psycopg.AsyncConnection.connect(database_url) as ac:
        await add_event_async(ac, Event("Order", "new-2", "Placed", {}), new_aggregate=True)
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with Session(engine) as session, session.begin():
        add_event(session, Event("Order", "new-3", "Placed", {}), new_aggregate=True)
    engine.dispose()
    assert _locks(conn) == ["old-1"]
    assert conn.execute(EVENTS).fetchall() == [
        ("new-1", "Placed"),
        ("new-1", "Paid"),
        ("old-1", "Placed"),
        ("new-2", "Placed"),
        ("new-3", "Placed"),
    ]


async def test_a_later_writer_of_the_aggregate_takes_the_lock_and_comes_after(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url) as c:
        add_event(c, Event("Order", "9", "Placed", {}), new_aggregate=True)
    with psycopg.connect(database_url) as c:
        add_event(c, Event("Order", "9", "Shipped", {}))
    assert _locks(conn) == ["9"]
    assert conn.execute(EVENTS).fetchall() == [("9", "Placed"), ("9", "Shipped")]


async def test_a_booking_takes_no_aggregate_lock(database_url: str, conn: psycopg.Connection[Any]) -> None:
    app = create_app(db_only_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flights.test") as client:
            response = await client.post("/api/flights", json=PARIS_LONDON)
    assert response.status_code == 201, response.text
    assert conn.execute(EVENTS).fetchall() == [(str(response.json()["id"]), "FlightBooked")]
    assert _locks(conn) == []  # the flight is new in the booking's transaction
