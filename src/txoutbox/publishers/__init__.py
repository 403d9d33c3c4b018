"""Publishers: what the relay hands claimed events to, behind one small protocol.

A publisher sorts every failure into one of two kinds, because the relay treats them very differently:
- broker-wide (raised as `BrokerUnavailableError`: denied, unreachable, throttled, misconfigured, 5xx):
  nothing is wrong with the events, so no attempt is counted and the relay's circuit opens;
- per entry (returned as `EntryFailure`): this event was refused; `permanent` ones are dead-lettered at
  once, the others retried with backoff.

Implementations: `txoutbox.publishers.sqs.SqsPublisher` (Amazon SQS FIFO) and
`txoutbox.publishers.null.NullPublisher` (accepts everything; benchmarks).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from txoutbox.tracing import send_size

__all__ = ["EntryFailure", "OutgoingMessage", "Publisher"]


# Bytes every message's fixed attributes add: the event id (a UUID as text), the two names and types.
_FIXED_ATTRIBUTE_BYTES = 36 + len("eventType") + len("eventId") + 2 * len("String")


# Not frozen: a frozen dataclass sets each field through object.__setattr__, five times the cost of a plain
# one, and the relay builds one per event on its hot path. Treat it as read-only all the same.
@dataclass(slots=True)
class OutgoingMessage:
    """One claimed event, encoded for the wire (read-only by convention)."""

    row_id: int
    event_id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    body: bytes
    traceparent: str | None = None  # the writer's trace context (txoutbox.tracing)
    tracestate: str | None = None
    # `txoutbox replay`: extra string attributes (the replay mark) and its own deduplication id
    attributes: Mapping[str, str] = field(default_factory=dict)
    deduplication_id: str | None = None

    @property
    def size(self) -> int:
        """Bytes SQS counts against its limit: the body plus the message attributes."""
        size = len(self.body) + len(self.event_type) + _FIXED_ATTRIBUTE_BYTES
        if self.traceparent:
            size += send_size(self)
        if self.attributes:
            size += sum(len(k) + len(v) + len("String") for k, v in self.attributes.items())
        return size


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """The broker (or a local check) refused one message of a batch."""

    index: int
    code: str
    message: str
    permanent: bool

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


class Publisher(Protocol):
    """Sends batches of messages to a broker."""

    max_batch_entries: int
    max_batch_bytes: int

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        """Refuse locally what the broker would refuse for good (size, characters), without a call."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        """Send one batch; return the failed entries (by index). Raise BrokerUnavailableError if the
        broker as a whole did not take it."""

    async def probe(self) -> None:
        """A cheap call proving the broker takes our requests and is set up as we need (queue exists, is
        FIFO). Raise BrokerUnavailableError, with the reason, if not."""

    async def close(self) -> None:
        """Release connections."""
