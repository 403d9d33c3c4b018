"""The test kit (txoutbox.testing) on the project itself: the booking API writes its event in the flight's
transaction, the relay drains it into memory, and the payment handler runs on it once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.postgres import LocalPostgres
from payments.service import CONSUMER_NAME, process_payments
from tests.helpers import book_in_process
from txoutbox import Event, add_event
from txoutbox.config import RelaySettings, Settings
from txoutbox.consumer import InboundEvent
from txoutbox.testing import assert_event_written_with, drain, run_handler

BOOKING = {
    "departureAirport": "Paris",
    "arrivalAirport": "London",
    "departureDateTime": "2026-12-01T08:00:00Z",
    "arrivalDateTime": "2026-12-01T09:15:00Z",
}


async def _book(database_url: str) -> int:
    settings = Settings(database_url, None, None, None, "eu-west-1", local_stack=True)
    return int((await book_in_process(settings, BOOKING))["id"])


async def test_booking_drain_and_payment_with_the_kit(txoutbox_database_url: str) -> None:
    flight_id = await _book(txoutbox_database_url)
    with psycopg.connect(txoutbox_database_url) as conn:
        event = assert_event_written_with(
            conn, "public.flights", {"id": flight_id}, event_type="FlightBooked", aggregate_id=str(flight_id)
        )
    assert event["payload"]["departureAirport"] == "Paris"

    published = drain(txoutbox_database_url)  # the real relay, into memory, from inside this async test
    [received] = published.events
    assert (received.event_id, received.data["id"]) == (event["event_id"], flight_id)

    first = run_handler(txoutbox_database_url, process_payments, published.events, consumer=CONSUMER_NAME)
    again = run_handler(txoutbox_database_url, process_payments, published.messages, consumer=CONSUMER_NAME)
    assert (first.processed, first.duplicates, again.processed, again.duplicates) == (1, 0, 0, 1)
    with psycopg.connect(txoutbox_database_url) as conn:
        assert conn.execute("SELECT flight_id FROM public.payments").fetchall() == [(flight_id,)]


def test_an_event_written_in_another_transaction_fails_the_assertion(txoutbox_conn: Any) -> None:
    txoutbox_conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    with txoutbox_conn.transaction():
        txoutbox_conn.execute("INSERT INTO orders VALUES (1)")
    with txoutbox_conn.transaction():  # a second transaction: exactly what an outbox must not do
        add_event(txoutbox_conn, Event("Order", "1", "OrderPlaced", {"id": 1}))
    with pytest.raises(AssertionError, match=r"no outbox event .* was written in the transaction"):
        assert_event_written_with(txoutbox_conn, "orders", {"id": 1}, event_type="OrderPlaced")
    with txoutbox_conn.transaction():
        txoutbox_conn.execute("INSERT INTO orders VALUES (2)")
        add_event(txoutbox_conn, Event("Order", "2", "OrderPlaced", {"id": 2, "total": 5}))
    row = assert_event_written_with(txoutbox_conn, "orders", {"id": 2}, payload={"total": 5})
    assert row["aggregate_id"] == "2"
    with pytest.raises(AssertionError, match="no outbox event"):
        assert_event_written_with(txoutbox_conn, "orders", {"id": 2}, event_type="OrderCancelled")


def test_drain_keeps_order_and_format_and_a_failing_handler_acknowledges_nothing(
    txoutbox_database_url: str,
) -> None:
    with psycopg.connect(txoutbox_database_url) as conn:
        for n in range(3):
            add_event(conn, Event("Order", "7", "OrderPlaced", {"n": n}))
    published = drain(txoutbox_database_url, relay=RelaySettings(message_format="cloudevents"))
    assert [m.body.startswith(b'{"specversion"') for m in published.messages] == [True] * 3
    assert [e.data["n"] for e in published.events] == [0, 1, 2]

    async def failing(conn: Any, events: Sequence[InboundEvent]) -> None:
        raise ValueError("boom")

    run = run_handler(txoutbox_database_url, failing, published.events)
    assert (run.processed, run.acknowledged) == (0, [])


EXAMPLE = """
import psycopg
from txoutbox import Event, add_event
from txoutbox.testing import assert_event_written_with, drain

def test_order_is_placed_with_its_event(txoutbox_database_url):
    with psycopg.connect(txoutbox_database_url) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (42)")
        add_event(conn, Event("Order", "42", "OrderPlaced", {"id": 42}))
    with psycopg.connect(txoutbox_database_url) as conn:
        assert_event_written_with(conn, "orders", {"id": 42}, event_type="OrderPlaced")
    assert [e.data for e in drain(txoutbox_database_url).events] == [{"id": 42}]
"""


def test_the_plugin_loads_by_itself_in_an_applications_test_run(
    postgres: LocalPostgres, tmp_path: Path
) -> None:
    """The documented example (docs/testing.md), run by pytest in a project with no conftest."""
    (tmp_path / "test_example.py").write_text(EXAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "TXOUTBOX_TEST_DATABASE_URL": postgres.admin_url,
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
