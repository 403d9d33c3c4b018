"""The payment service's consumer against real SQS-protocol queues and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from devstack.sqs import ensure_queues
from payments.service import CONSUMER_NAME, process_payments
from tests.helpers import apoll, running
from txoutbox import sqs_admin
from txoutbox.config import Settings
from txoutbox.consumer import Consumer


def envelope(flight_id: int, event_id: uuid.UUID | None = None) -> str:
    return json.dumps(
        {
            "eventId": str(event_id or uuid.uuid4()),
            "eventType": "FlightBooked",
            "aggregateType": "Flight",
            "aggregateId": str(flight_id),
            "occurredAt": "2026-01-01T00:00:00Z",
            "data": {"id": flight_id},
        }
    )


def send(sqs: Any, queue_url: str, body: str, group: str = "g") -> None:
    sqs.send_message(
        QueueUrl=queue_url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex
    )


def consuming(settings: Settings) -> contextlib.AbstractAsyncContextManager[Consumer]:
    return running(Consumer(settings, CONSUMER_NAME, process_payments, concurrency=2, wait_seconds=1))


def payments(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT flight_id, event_id FROM public.payments ORDER BY flight_id").fetchall()


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def test_pays_once_logs_and_deletes_even_when_redelivered(
    settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    event_id = uuid.uuid4()
    body = envelope(7, event_id)
    send(sqs, settings.sqs_queue_url, body)
    send(sqs, settings.sqs_queue_url, envelope(8), group="h")
    async with consuming(settings) as consumer:
        assert await apoll(lambda: len(payments(settings.database_url)) == 2, 10)
        send(sqs, settings.sqs_queue_url, body)  # the same event again (new dedup id: past SQS's window)
        assert await apoll(lambda: consumer.duplicates == 1, 10)
        assert await apoll(lambda: queue_depth(sqs, settings.sqs_queue_url) == 0, 10)
    assert [p[0] for p in payments(settings.database_url)] == [7, 8]
    messages = [r.getMessage() for r in caplog.records]
    assert f"Flight event received: {body}. Processing payment." in messages
    assert any(m.startswith(f"duplicate event {event_id}") for m in messages)


async def test_failing_message_goes_to_dlq_after_10_receives_then_redrive_pays_once(
    settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    suffix = uuid.uuid4().hex[:10]
    queues = ensure_queues(sqs, f"p{suffix}.fifo", f"pd{suffix}.fifo", visibility_timeout=1)
    settings = replace(settings, sqs_queue_url=queues.queue_url, sqs_dlq_url=queues.dlq_url)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:  # a bug: flight 13 cannot be paid
        conn.execute("""
            CREATE FUNCTION fail_13() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN IF NEW.flight_id = 13 THEN RAISE EXCEPTION 'card declined'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER fail_13 BEFORE INSERT ON public.payments FOR EACH ROW EXECUTE FUNCTION fail_13();
        """)
    send(sqs, queues.queue_url, envelope(13), group="13")
    send(sqs, queues.queue_url, "not json", group="junk")
    send(sqs, queues.queue_url, envelope(14), group="14")
    async with consuming(settings):
        assert await apoll(lambda: queue_depth(sqs, queues.dlq_url) == 2, 60)
    assert [p[0] for p in payments(settings.database_url)] == [14]
    listed = sqs_admin.dlq_list(settings)
    assert sorted(m["group_id"] for m in listed) == ["13", "junk"]
    assert all(m["receive_count"] >= 1 for m in listed)
    assert any(
        "malformed message" in r.getMessage() and "body is not JSON" in r.getMessage() for r in caplog.records
    )
    assert any("card declined" in r.getMessage() for r in caplog.records)

    with psycopg.connect(settings.database_url, autocommit=True) as conn:  # the bug is fixed
        conn.execute("DROP TRIGGER fail_13 ON public.payments")
    assert sqs_admin.dlq_redrive(settings) == 2
    assert queue_depth(sqs, queues.dlq_url) == 0
    async with consuming(settings):
        assert await apoll(lambda: [p[0] for p in payments(settings.database_url)] == [13, 14], 15)
    assert [p[0] for p in payments(settings.database_url)] == [13, 14]


async def test_a_failed_event_holds_back_the_later_events_of_its_group(settings: Settings, sqs: Any) -> None:
    """Batch A1 A2 A3 B1, the handler fails once on A2: the one-at-a-time fallback handles A1 and B1, and
    leaves A3 for redelivery behind A2 (before the fix, A3 was handled and deleted while A2 waited).

    AWS may return several messages of one group in one receive; fauxqs returns one per group. So the
    events of aggregate A travel in SQS groups of their own here, which puts them in one receive as AWS would.
    """
    suffix = uuid.uuid4().hex[:10]
    queues = ensure_queues(sqs, f"o{suffix}.fifo", f"od{suffix}.fifo", visibility_timeout=1)
    settings = replace(settings, sqs_queue_url=queues.queue_url, sqs_dlq_url=queues.dlq_url)
    ids = {name: uuid.uuid4() for name in ("A1", "A2", "A3", "B1")}
    for name, event_id in ids.items():
        body = json.loads(envelope(int(name[1]), event_id))
        send(sqs, queues.queue_url, json.dumps({**body, "aggregateId": name[0]}), group=name)
    handled: list[str] = []
    failures: list[str] = []
    names = {v: k for k, v in ids.items()}

    async def ledger(conn: psycopg.AsyncConnection[Any], events: Any) -> None:
        for event in events:
            if names[event.event_id] == "A2" and event.receive_count == 1:  # fails on its first delivery
                failures.append("A2")
                raise RuntimeError("transient failure of A2")
        handled.extend(names[e.event_id] for e in events)  # only once the whole batch succeeded

    consumer = Consumer(settings, "ledger", ledger, concurrency=1, wait_seconds=1)
    async with running(consumer):
        assert await apoll(lambda: len(handled) == 4, 20), handled
        assert await apoll(lambda: queue_depth(sqs, queues.queue_url) == 0, 10)
    assert failures == ["A2", "A2"]  # in the batch, then alone
    assert [n for n in handled if n.startswith("A")] == ["A1", "A2", "A3"]
    assert sorted(handled) == ["A1", "A2", "A3", "B1"]


async def test_inbox_ids_past_the_retention_window_are_pruned_in_batches(settings: Settings) -> None:
    """Ids older than the window (default 15 days) go, in batches, on the consumer's own task; recent stay."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO txoutbox.inbox (consumer, event_id, processed_at) "
            "SELECT 'ledger', gen_random_uuid(), now() - interval '16 days' FROM generate_series(1, 2500)"
        )
        conn.execute(
            "INSERT INTO txoutbox.inbox (consumer, event_id, processed_at) "
            "SELECT c, gen_random_uuid(), now() - interval '14 days' "
            "FROM unnest(ARRAY['ledger', 'ledger', 'other']) AS c"
        )
        conn.execute(
            "INSERT INTO txoutbox.inbox (consumer, event_id, processed_at) "
            "SELECT 'other', gen_random_uuid(), now() - interval '30 days'"
        )

    def counts() -> list[tuple[Any, ...]]:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute(
                "SELECT consumer, count(*) FROM txoutbox.inbox GROUP BY consumer ORDER BY consumer"
            ).fetchall()

    async def nothing(conn: psycopg.AsyncConnection[Any], events: Any) -> None:
        return None

    async with running(Consumer(settings, "ledger", nothing, concurrency=1, wait_seconds=1)):
        assert await apoll(lambda: counts() == [("ledger", 2), ("other", 2)], 15), counts()
    # another consumer's ids are its own business: "other" keeps its 30-day-old id until it prunes
