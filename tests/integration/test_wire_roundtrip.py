"""Every valid JSON payload reaches the consumer unchanged (SQS-refused characters escaped on the wire),
what jsonb cannot store is refused at write time, and SendMessageBatch's per-entry failures are read."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.helpers import apoll, outbox_count, running_relay, sqs_publisher
from txoutbox import Event, InvalidEventError, add_event, add_events
from txoutbox.config import Settings
from txoutbox.publishers import OutgoingMessage
from txoutbox.wire import parse_message

AWKWARD = {
    "airport": "Par\ufffeis\uffff",
    "key\uffff": ["\u0001\u001f\t\n\r", "\ufffd", "\U0001f600", "\\u0000 is text here"],
}


async def test_payload_with_characters_sqs_refuses_round_trips_unchanged(
    settings: Settings, receive_all: Any
) -> None:
    event = Event("Flight", "FFFF", "FlightBooked", AWKWARD)
    with psycopg.connect(settings.database_url) as conn:
        add_events(conn, [event])
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM txoutbox.dead_letters").fetchone() == (0,)
    [message] = receive_all(settings.sqs_queue_url, 1)
    parsed = parse_message(message)
    assert parsed.event_id == event.event_id
    assert parsed.data == AWKWARD


def test_nul_in_a_payload_is_an_invalid_event_and_nothing_is_written(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(InvalidEventError, match="U\\+0000"):
            add_event(conn, Event("Flight", "NUL", "FlightBooked", {"name": "a\x00b"}))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM txoutbox.outbox").fetchone() == (0,)


async def test_per_entry_failures_of_a_batch_are_read_from_the_answer(settings: Settings) -> None:
    # A raw U+FFFF bypasses the wire encoding and the local check: the real server refuses that one entry
    # in SendMessageBatch's `Failed` list and takes the others.
    publisher = sqs_publisher(settings)

    def message(n: int, body: str) -> OutgoingMessage:
        return OutgoingMessage(n, uuid.uuid4(), "Flight", f"E{n}", "FlightBooked", body.encode())

    try:
        failures = await publisher.send_batch(
            [message(0, '{"ok": 0}'), message(1, '{"bad": "\uffff"}'), message(2, '{"ok": 2}')]
        )
    finally:
        await publisher.close()
    assert [(f.index, f.code, f.permanent) for f in failures] == [(1, "InvalidMessageContents", True)]
