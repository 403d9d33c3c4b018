"""The library's exceptions: everything txoutbox raises derives from `TxOutboxError`."""

from __future__ import annotations


class TxOutboxError(Exception):
    """Base class of every error txoutbox raises on purpose."""


class ConfigurationError(TxOutboxError):
    """A setting is missing or malformed, or the local stack is not running."""


class InvalidEventError(TxOutboxError, ValueError):
    """An event cannot be stored: a field is empty, too long or not JSON-serializable."""


class MigrationError(TxOutboxError):
    """The database schema is not in the state the migrations expect."""


class NotFoundError(TxOutboxError):
    """An operator command named a row that does not exist."""


class BrokerUnavailableError(TxOutboxError):
    """The broker as a whole cannot take messages (denied, unreachable, throttled, 5xx).

    Such failures say nothing about the events themselves, so they never count as an event's attempt:
    the relay opens its circuit instead.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
