"""The relay against the real PostgreSQL and the real SQS-protocol server."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from tests.helpers import apoll, outbox_count, running_relay, seed_events
from txoutbox.config import Settings


async def test_publishes_envelope_with_group_dedup_and_attributes(
    settings: Settings, receive_all: Any
) -> None:
    events = seed_events(settings.database_url, {"F-1": 2, "F-2": 1})
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    messages = receive_all(settings.sqs_queue_url, 3)
    assert len(messages) == 3
    by_id = {m["MessageAttributes"]["eventId"]["StringValue"]: m for m in messages}
    for event in events:
        message = by_id[str(event.event_id)]
        body = orjson.loads(message["Body"])
        assert body["eventId"] == str(event.event_id)
        assert body["eventType"] == "FlightBooked"
        assert body["aggregateType"] == "Flight"
        assert body["aggregateId"] == event.aggregate_id
        assert body["data"] == dict(event.payload)
        assert body["occurredAt"].endswith("Z")
        assert message["Attributes"]["MessageGroupId"] == event.aggregate_id
        assert message["Attributes"]["MessageDeduplicationId"] == event.event_id.hex
        assert message["MessageAttributes"]["eventType"]["StringValue"] == "FlightBooked"


async def test_notification_wakes_the_relay_well_before_the_poll(
    settings: Settings, receive_all: Any
) -> None:
    from dataclasses import replace

    slow_poll = replace(settings, relay=replace(settings.relay, poll_interval=30))
    async with running_relay(slow_poll):
        await apoll(lambda: False, 0.3)  # let the listener connect
        seed_events(settings.database_url, {"F-9": 1})
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 5), (
            "NOTIFY did not wake the relay"
        )


async def test_events_of_an_aggregate_keep_their_order(settings: Settings, receive_all: Any) -> None:
    seed_events(settings.database_url, {f"A{i}": 20 for i in range(10)})
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 20)
    messages = receive_all(settings.sqs_queue_url, 200, timeout=30)
    seqs: dict[str, list[int]] = {}
    for m in messages:
        body = orjson.loads(m["Body"])
        seqs.setdefault(body["aggregateId"], []).append(body["data"]["seq"])
    assert len(messages) == 200
    assert all(s == list(range(20)) for s in seqs.values()), seqs


async def test_shutdown_releases_nothing_half_done(settings: Settings) -> None:
    from collections import Counter

    from tests.helpers import sqs_publisher
    from tests.integration.test_relay_leases import SlowPublisher

    def leased() -> int:
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM txoutbox.outbox WHERE locked_by IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    seed_events(settings.database_url, {f"S{i}": 5 for i in range(50)})
    sent: Counter[str] = Counter()
    # A slow broker: the stop comes while a claim of 250 events is in hand, mid-publish.
    async with running_relay(settings, SlowPublisher(sqs_publisher(settings), 0.3, sent)):
        assert await apoll(lambda: leased() > 0 and sent, 10)
    with psycopg.connect(settings.database_url) as conn:
        relays = conn.execute("SELECT count(*) FROM txoutbox.relays").fetchone()
    assert leased() == 0
    assert relays == (0,)
    assert 0 < len(sent) < 250 and outbox_count(settings.database_url) == 250 - len(sent)
