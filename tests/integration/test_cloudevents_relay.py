"""TXOUTBOX_MESSAGE_FORMAT=cloudevents through the real relay and fauxqs: the CloudEvents SDK reads what the
relay sends, and a consumer handles both formats waiting in one queue."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import psycopg
from cloudevents.core.formats.json import JSONFormat

from tests.helpers import apoll, outbox_count, running, running_relay, seed_events
from txoutbox.config import Settings
from txoutbox.consumer import Consumer, InboundEvent


def cloudevents(settings: Settings) -> Settings:
    return replace(
        settings, relay=replace(settings.relay, message_format="cloudevents", event_source="/flights")
    )


async def test_the_cloudevents_sdk_parses_what_the_relay_sends(settings: Settings, receive_all: Any) -> None:
    events = seed_events(settings.database_url, {"F-1": 3, "F-2": 2})
    with psycopg.connect(settings.database_url) as conn:
        row_ids = dict(conn.execute("SELECT event_id, id FROM txoutbox.outbox").fetchall())
    async with running_relay(cloudevents(settings)):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    messages = receive_all(settings.sqs_queue_url, len(events))
    assert len(messages) == len(events)
    by_id = {}
    for message in messages:
        event = JSONFormat().read(None, message["Body"])
        by_id[uuid.UUID(event.get_id())] = (event, message)
    sequences: dict[str, list[str]] = {}
    for written in events:
        event, message = by_id[written.event_id]
        assert event.get_specversion() == "1.0"
        assert event.get_source() == "/flights"
        assert event.get_type() == "FlightBooked"
        assert event.get_subject() == written.aggregate_id
        assert event.get_datacontenttype() == "application/json"
        assert event.get_time() is not None
        assert event.get_data() == dict(written.payload)
        assert event.get_extension("aggregatetype") == "Flight"
        # id = MessageDeduplicationId, partitionkey = MessageGroupId, sequence = the zero-padded outbox id
        assert message["Attributes"]["MessageDeduplicationId"] == written.event_id.hex
        assert event.get_extension("partitionkey") == message["Attributes"]["MessageGroupId"]
        assert int(event.get_extension("sequence")) == row_ids[written.event_id]
        sequences.setdefault(written.aggregate_id, []).append(event.get_extension("sequence"))
    for aggregate, seen in sequences.items():  # written order = sequence order (as strings)
        assert seen == sorted(seen), aggregate


async def test_a_consumer_handles_envelopes_already_queued_and_cloudevents_alike(settings: Settings) -> None:
    seed_events(settings.database_url, {"F-1": 2})
    async with running_relay(settings):  # the default: envelopes
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    seed_events(settings.database_url, {"F-1": 2})
    async with running_relay(cloudevents(settings)):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)

    handled: list[InboundEvent] = []

    async def handler(conn: Any, batch: Sequence[InboundEvent]) -> None:
        handled.extend(batch)

    async with running(Consumer(settings, "mixed", handler, concurrency=1, wait_seconds=1)):
        assert await apoll(lambda: len(handled) == 4, 15)
    assert [e.data["seq"] for e in handled] == [0, 1, 0, 1]  # in order within the aggregate's group
    assert [e.body.startswith('{"specversion"') for e in handled] == [False, False, True, True]
    assert {(e.aggregate_type, e.aggregate_id, e.event_type) for e in handled} == {
        ("Flight", "F-1", "FlightBooked")
    }
