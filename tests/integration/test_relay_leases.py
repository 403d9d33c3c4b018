"""Leases of the events in hand: renewed while a long claim is published, never outlived."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from tests.helpers import apoll, outbox_count, running_relay, seed_events, sqs_publisher
from txoutbox.config import Settings
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.publishers.sqs import SqsPublisher


class SlowPublisher(SqsPublisher):
    """The real SQS publisher behind a slow network: each SendMessageBatch takes `delay` longer.
    (Slowness on demand is not something the local SQS can do.) Records every event it sends."""

    def __init__(self, inner: SqsPublisher, delay: float, sent: Counter[str]) -> None:
        self.__dict__.update(inner.__dict__)
        self.delay = delay
        self.sent = sent

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        await asyncio.sleep(self.delay)
        failures = await super().send_batch(messages)
        failed = {f.index for f in failures}
        self.sent.update(str(m.event_id) for i, m in enumerate(messages) if i not in failed)
        return failures


async def test_a_claim_longer_than_its_lease_is_never_published_twice(settings: Settings) -> None:
    # Two aggregates of 12 events: 12 rounds of 0.25 s each, three times the 1 s lease. Without renewal
    # the second relay claims the same events once the first one's lease runs out, and sends them again.
    settings = replace(settings, relay=replace(settings.relay, lease_seconds=1.0, poll_interval=0.05))
    seed_events(settings.database_url, {"LONG-A": 12, "LONG-B": 12})
    sent: Counter[str] = Counter()
    async with (
        running_relay(settings, SlowPublisher(sqs_publisher(settings), 0.25, sent)),
        running_relay(settings, SlowPublisher(sqs_publisher(settings), 0.25, sent)),
    ):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 30)
    twice = {event: n for event, n in sent.items() if n > 1}
    assert len(sent) == 24 and not twice, twice
