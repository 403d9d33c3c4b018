"""What a writer stores: an `Event` for one aggregate."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from txoutbox.errors import InvalidEventError
from txoutbox.ids import uuid7

# SQS MessageGroupId: 1-128 characters, alphanumeric and punctuation. The aggregate id becomes the group id,
# so an id SQS would refuse is refused here, at write time, where the caller can still fix it.
_GROUP_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_MAX_NAME = 256
# A JSON `\u0000` escape (an odd number of backslashes before `u0000`): PostgreSQL's jsonb refuses it.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

JsonValue = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True, slots=True)
class Event:
    """An event to publish, written in the caller's transaction.

    `aggregate_id` becomes the SQS MessageGroupId: events of one aggregate are delivered in the order
    they were written. `event_id` (default: a new UUIDv7) becomes the MessageDeduplicationId and the
    consumer's idempotency key; pass your own to make a retried write idempotent.
    """

    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: JsonValue
    event_id: uuid.UUID = field(default_factory=uuid7)

    def validate(self) -> bytes:
        """Check the fields; return the payload as JSON. Raises InvalidEventError naming the field."""
        for name in ("aggregate_type", "event_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidEventError(f"{name} must be a non-empty string")
            if len(value) > _MAX_NAME:
                raise InvalidEventError(f"{name} is longer than {_MAX_NAME} characters")
        if not isinstance(self.aggregate_id, str) or not _GROUP_ID.match(self.aggregate_id):
            raise InvalidEventError(
                "aggregate_id must be 1-128 printable ASCII characters without spaces "
                f"(it becomes the SQS MessageGroupId), got {self.aggregate_id!r}"
            )
        if not isinstance(self.event_id, uuid.UUID):
            raise InvalidEventError("event_id must be a uuid.UUID")
        if not isinstance(self.payload, Mapping | list | tuple):
            raise InvalidEventError("payload must be a JSON object or array")
        try:
            payload = orjson.dumps(self.payload, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise InvalidEventError(f"payload is not JSON-serializable: {exc}") from None
        if b"\\u0000" in payload and _NUL_ESCAPE.search(payload):
            raise InvalidEventError("payload contains the character U+0000 (NUL), which jsonb cannot store")
        return payload
