"""Nothing claimed waits behind another claim's rounds: a long claim (a 1,000-event burst goes out one round
per event) must not hold other aggregates' events. (This was a claim made ahead; the relay now publishes
each claim in a task of its own, relay/engine.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tests.helpers import apoll, running_relay, seed_events
from txoutbox.config import Settings
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.testing import MemoryPublisher


@dataclass
class SlowBroker(MemoryPublisher):
    """Every SendMessageBatch takes 20 ms (a broker far away): 100 rounds take 2 s."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        await asyncio.sleep(0.02)
        return await super().send_batch(messages)


def published(broker: MemoryPublisher, aggregate: str) -> int:
    return sum(1 for m in broker.messages if m.aggregate_id == aggregate)


async def test_events_behind_a_long_aggregate_are_left_to_another_relay(settings: Settings) -> None:
    """A's 300 events, then B's one. The first relay claims 100 of A (100 rounds). Before the fix it also
    claimed B ahead and sat on it until A's 100 rounds were over, although a second relay was idle."""
    settings = replace(settings, relay=replace(settings.relay, batch_size=100, workers=1))
    seed_events(settings.database_url, {"A": 300})
    seed_events(settings.database_url, {"B": 1})  # after all of A
    broker = SlowBroker()
    async with running_relay(settings, broker):
        assert await apoll(lambda: published(broker, "A") >= 3, 20)  # in A's rounds, its next claim made
        async with running_relay(settings, broker):
            assert await apoll(lambda: published(broker, "B") == 1, 20)
            a_before_b = published(broker, "A")
            assert await apoll(lambda: published(broker, "A") == 300, 60)
    assert a_before_b < 50, f"B went out only after {a_before_b} rounds of A"
