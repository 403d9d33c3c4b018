"""A received FIFO message locks its group until it is deleted or its visibility ends: the consumer must not
leave groups locked for the queue's whole visibility timeout after a failed delete or its own death, and
must keep a slow batch to itself. The queues here have SQS's default 30 s timeout; every wait is far shorter.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from devstack.sqs import set_fault
from tests.helpers import apoll, poll, running, service_env
from txoutbox.config import Settings
from txoutbox.consumer import Consumer, InboundEvent

QUEUE_VISIBILITY_SECONDS = 30  # tests/conftest.py's queues: ensure_queues' default


def send(sqs: Any, queue_url: str, aggregate: str, seq: int) -> str:
    event_id = str(uuid.uuid4())
    body = {
        "eventId": event_id,
        "eventType": "Changed",
        "aggregateType": "Thing",
        "aggregateId": aggregate,
        "data": {"seq": seq},
    }
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(body),
        MessageGroupId=aggregate,
        MessageDeduplicationId=event_id,
    )
    return event_id


def queue_visibility(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    return int(attrs["Attributes"]["VisibilityTimeout"])


async def test_a_delete_refused_for_a_moment_is_retried_and_the_group_moves_on(
    settings: Settings, sqs: Any
) -> None:
    """SQS denies every call for 1 s right after A1 is handled: its delete fails. Retried, it lands when SQS
    answers again and A2 follows within seconds (before the fix: after the 30 s visibility timeout)."""
    assert queue_visibility(sqs, settings.sqs_queue_url or "") == QUEUE_VISIBILITY_SECONDS
    assert settings.fault_url is not None
    fault_url = settings.fault_url
    first = send(sqs, settings.sqs_queue_url or "", "A", 1)
    send(sqs, settings.sqs_queue_url or "", "A", 2)
    handled: list[int] = []

    async def handler(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
        if any(str(e.event_id) == first for e in events) and not handled:
            set_fault(fault_url, "deny")  # the delete after this commit is refused
            asyncio.get_running_loop().call_later(1.0, set_fault, fault_url, "allow")
        handled.extend(e.data["seq"] for e in events)

    # Held as long as the queue would: only the retried delete can release A's group early.
    consumer = Consumer(
        settings,
        "ledger",
        handler,
        concurrency=1,
        wait_seconds=1,
        visibility_seconds=QUEUE_VISIBILITY_SECONDS,
    )
    try:
        async with running(consumer):
            assert await apoll(lambda: handled == [1, 2], 12), handled
        assert consumer.duplicates == 0
    finally:
        set_fault(fault_url, "allow")


DYING_CONSUMER = """
import os, signal
from txoutbox.config import Settings
from txoutbox.consumer import Consumer
from txoutbox.service import run_until_signalled

async def die(conn, events):  # a crash while the batch is in hand (inside the handler's transaction)
    os.kill(os.getpid(), signal.SIGKILL)

consumer = Consumer(
    Settings.from_env(need_sqs=True), "ledger", die, concurrency=1, wait_seconds=1, visibility_seconds=2
)
run_until_signalled(consumer.run)
"""


async def test_a_consumer_killed_holding_a_batch_gives_its_groups_back_after_its_own_visibility(
    settings: Settings, sqs: Any
) -> None:
    """The dying consumer received A1 with a 2 s visibility: another consumer has it within seconds, not after
    the queue's 30 s."""
    send(sqs, settings.sqs_queue_url or "", "A", 1)
    send(sqs, settings.sqs_queue_url or "", "A", 2)
    dying = subprocess.Popen(
        [sys.executable, "-c", DYING_CONSUMER],
        env=service_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert poll(lambda: dying.poll() is not None, 30), "the consumer never received A1"
    finally:
        if dying.poll() is None:
            dying.kill()
    assert dying.returncode == -9
    handled: list[int] = []

    async def handler(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
        handled.extend(e.data["seq"] for e in events)

    async with running(Consumer(settings, "ledger", handler, concurrency=1, wait_seconds=1)):
        assert await apoll(lambda: handled == [1, 2], 12), handled


async def test_a_slow_batch_stays_with_its_consumer_past_the_visibility(settings: Settings, sqs: Any) -> None:
    """A handler taking three visibility timeouts keeps its message (extended while in hand): the competing
    consumer never receives it, so nobody sees a duplicate."""
    send(sqs, settings.sqs_queue_url or "", "A", 1)
    handled: list[str] = []

    async def slow(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
        await asyncio.sleep(3.5)  # the injected slowness: longer than three 1 s visibility timeouts
        handled.extend("slow" for _ in events)

    async def fast(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
        handled.extend("fast" for _ in events)

    first = Consumer(settings, "ledger", slow, concurrency=1, wait_seconds=1, visibility_seconds=1)
    second = Consumer(settings, "ledger", fast, concurrency=1, wait_seconds=1, visibility_seconds=1)
    async with running(first):
        assert await apoll(lambda: first.processed == 0 and not handled and _in_flight(sqs, settings), 10)
        async with running(second):
            assert await apoll(lambda: handled == ["slow"], 15), handled
            assert await apoll(lambda: _depth(sqs, settings) == 0, 10)
    assert (first.duplicates, second.duplicates) == (0, 0)
    assert handled == ["slow"]


def _in_flight(sqs: Any, settings: Settings) -> bool:
    attrs = sqs.get_queue_attributes(
        QueueUrl=settings.sqs_queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 1


def _depth(sqs: Any, settings: Settings) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=settings.sqs_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
