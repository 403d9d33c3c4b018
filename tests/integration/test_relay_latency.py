"""A relay loop claims again while its previous claim is still being sent: an event committed meanwhile
goes out without waiting for the earlier claim's sends and acknowledgement (commit -> SQS latency), and
an aggregate's later event still waits for its earlier one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tests.helpers import apoll, running_relay, seed_events
from txoutbox.config import Settings
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.testing import MemoryPublisher


@dataclass
class HeldBroker(MemoryPublisher):
    """Holds every batch holding an event of aggregate "A" until `release` is set (a slow send)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: bool = False

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        if any(m.aggregate_id == "A" for m in messages):
            self.holding = True
            await self.release.wait()
        return await super().send_batch(messages)

    def sent(self, aggregate: str) -> list[int]:
        return [m.row_id for m in self.messages if m.aggregate_id == aggregate]


async def test_a_later_claim_is_sent_while_an_earlier_one_is_still_being_sent(settings: Settings) -> None:
    """One worker loop. A's event is claimed and its send held; then A's second event and B's are committed.
    Before the fix the loop waited for A's send and acknowledgement before it claimed again, so B waited
    as long as A's send took."""
    settings = replace(settings, relay=replace(settings.relay, workers=1))
    seed_events(settings.database_url, {"A": 1})
    broker = HeldBroker()
    async with running_relay(settings, broker):
        try:
            assert await apoll(lambda: broker.holding, 10)
            seed_events(settings.database_url, {"A": 1, "B": 1})
            assert await apoll(lambda: broker.sent("B"), 10), "B waited for the send of A's claim"
            assert broker.sent("A") == [], "A's later event went out before its earlier one"
        finally:
            broker.release.set()
        assert await apoll(lambda: len(broker.sent("A")) == 2, 10)
    first, second = broker.sent("A")
    assert first < second, "A's events went out out of order"
