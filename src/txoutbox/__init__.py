"""txoutbox: a transactional outbox for PostgreSQL, published to Amazon SQS.

Write events in your own transaction with `add_event` / `add_events` (or their `_async` forms); run
`txoutbox relay` to publish them.
"""

from txoutbox.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    InvalidEventError,
    MigrationError,
    NotFoundError,
    TxOutboxError,
)
from txoutbox.event import Event
from txoutbox.writer import add_event, add_event_async, add_events, add_events_async

__all__ = [
    "BrokerUnavailableError",
    "ConfigurationError",
    "Event",
    "InvalidEventError",
    "MigrationError",
    "NotFoundError",
    "TxOutboxError",
    "add_event",
    "add_event_async",
    "add_events",
    "add_events_async",
]
