"""The relay against the real PostgreSQL and the real SQS-protocol server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import psycopg
import pytest

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


@pytest.mark.parametrize("how", ["database default", "PGTZ"])
async def test_occurred_at_is_the_commit_time_in_utc_whatever_the_session_time_zone(
    how: str, settings: Settings, receive_all: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay asks for UTC sessions (relay.store.SESSION_SETTINGS) and the encoder then skips its
    # conversion; a client's PGTZ overrides that request, so the conversion must still happen there.
    zone = "Asia/Kolkata"  # +05:30: an hour-only mistake would not hide
    if how == "PGTZ":
        monkeypatch.setenv("PGTZ", zone)
    else:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            name = conn.info.dbname
            conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{zone}'")
    seed_events(settings.database_url, {"F-1": 1, "F-2": 1})
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SHOW timezone").fetchone() == (zone,)
        stored = {
            str(event_id): created_at
            for event_id, created_at in conn.execute("SELECT event_id, created_at FROM txoutbox.outbox")
        }
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    messages = receive_all(settings.sqs_queue_url, 2)
    assert len(messages) == 2
    for message in messages:
        body = orjson.loads(message["Body"])
        occurred_at = body["occurredAt"]
        assert occurred_at.endswith("Z"), occurred_at
        assert dt.datetime.fromisoformat(occurred_at) == stored[body["eventId"]]


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


def test_the_id_array_literal_reads_as_the_same_bigint_array_as_a_list(settings: Settings) -> None:
    # The relay sends the ids of a claim's rows as one array literal (queries.id_array), not as a list.
    from txoutbox import queries

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for ids in ([], [7], [1, 2**40, 2**63 - 1, 3]):
            sql = f"SELECT {queries.IDS}"
            as_literal = conn.execute(sql, {"ids": queries.id_array(ids)}).fetchone()
            as_list = conn.execute(sql, {"ids": ids}).fetchone()
            assert as_literal == as_list == (ids,)
