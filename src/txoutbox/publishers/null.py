"""A publisher that accepts everything at once: the engine's own ceiling in benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.publishers.sqs import SQS_MAX_BATCH_BYTES, SQS_MAX_BATCH_ENTRIES


class NullPublisher:
    """Accepts every message without sending it: what is left is claim, encode and acknowledge."""

    max_batch_entries = SQS_MAX_BATCH_ENTRIES
    max_batch_bytes = SQS_MAX_BATCH_BYTES

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        return None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        return []

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None
