"""The message on the wire: the envelope the relay encodes and the consumer parses, in one place.

Body: `{"eventId", "eventType", "aggregateType", "aggregateId", "occurredAt", "data"}` as JSON (UTF-8), with
`data` the event's payload exactly as stored.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from txoutbox.errors import TxOutboxError

_REQUIRED = ("eventId", "eventType", "aggregateType", "aggregateId", "data")


class MalformedMessageError(TxOutboxError):
    """A message is not a txoutbox envelope (or its data is not what the handler needs)."""


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One received event: the envelope's fields, plus the SQS message it came in."""

    event_id: uuid.UUID
    event_type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: str
    data: Any
    body: str
    message_id: str
    receipt_handle: str
    receive_count: int


def encode_envelope(
    event_id: uuid.UUID,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    occurred_at: dt.datetime,
    payload_json: str,
) -> bytes:
    """The message body. `payload_json` is the stored JSON text, spliced in as it is (no decode and
    re-encode)."""
    return orjson.dumps(
        {
            "eventId": event_id,
            "eventType": event_type,
            "aggregateType": aggregate_type,
            "aggregateId": aggregate_id,
            "occurredAt": occurred_at.astimezone(dt.UTC),
            "data": orjson.Fragment(payload_json),
        },
        option=orjson.OPT_UTC_Z,
    )


def parse_message(message: dict[str, Any]) -> InboundEvent:
    """An SQS message (as ReceiveMessage returns it) as an event; MalformedMessageError saying what is
    wrong."""
    body = message.get("Body", "")
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"body is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise MalformedMessageError("body is not a JSON object")
    missing = [k for k in _REQUIRED if k not in envelope]
    if missing:
        raise MalformedMessageError(f"envelope lacks {', '.join(missing)}")
    try:
        event_id = uuid.UUID(str(envelope["eventId"]))
    except ValueError:
        raise MalformedMessageError(f"eventId {envelope['eventId']!r} is not a UUID") from None
    return InboundEvent(
        event_id=event_id,
        event_type=str(envelope["eventType"]),
        aggregate_type=str(envelope["aggregateType"]),
        aggregate_id=str(envelope["aggregateId"]),
        occurred_at=str(envelope.get("occurredAt", "")),
        data=envelope["data"],
        body=body,
        message_id=message.get("MessageId", ""),
        receipt_handle=message["ReceiptHandle"],
        receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
    )
