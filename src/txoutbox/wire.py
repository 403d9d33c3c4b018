"""The message on the wire: the envelope the relay encodes and the consumer parses, in one place.

Body (`TXOUTBOX_MESSAGE_FORMAT=envelope`, the default): `{"eventId", "eventType", "aggregateType",
"aggregateId", "occurredAt", "data"}` as JSON (UTF-8), with `data` the event's payload exactly as stored.
With `TXOUTBOX_MESSAGE_FORMAT=cloudevents` the body is a CloudEvents 1.0 JSON event (`txoutbox.cloudevents`).
The consumer reads both, so the format can change while messages of the other wait in the queue.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from txoutbox import cloudevents
from txoutbox.errors import TxOutboxError

_REQUIRED = ("eventId", "eventType", "aggregateType", "aggregateId", "data")
MESSAGE_FORMATS = ("envelope", "cloudevents")
# Message attribute set on messages `txoutbox replay` sends (value "1"): consumers can tell a replay.
REPLAY_ATTRIBUTE = "txoutbox-replay"


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
    traceparent: str | None = None  # W3C trace context the message carries (see txoutbox.tracing)
    tracestate: str | None = None
    replayed: bool = False  # sent by `txoutbox replay`, not by the relay


def encode(
    message_format: str,
    *,
    row_id: int,
    event_id: uuid.UUID,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    occurred_at: dt.datetime,
    payload_json: str,
    source: str = cloudevents.DEFAULT_SOURCE,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> bytes:
    """The body of one stored event in `message_format` (one of MESSAGE_FORMATS), publishable as it is."""
    if message_format == "cloudevents":
        return sqs_safe(
            cloudevents.encode_cloudevent(
                row_id=row_id,
                event_id=event_id,
                event_type=event_type,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                occurred_at=occurred_at,
                payload_json=payload_json,
                source=source,
                traceparent=traceparent,
                tracestate=tracestate,
            )
        )
    return sqs_safe(
        encode_envelope(event_id, event_type, aggregate_type, aggregate_id, occurred_at, payload_json)
    )


# What SQS refuses in a body: anything but tab, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD and U+10000 up. A JSON
# body made here can hold only two of those characters, U+FFFE and U+FFFF, and only inside strings: C0
# controls in strings are always escaped (by orjson and by PostgreSQL's jsonb output), and lone surrogates
# can be neither stored in jsonb nor written as UTF-8. UTF-8 is self-synchronising, so these byte sequences
# are always those characters.
_SQS_REFUSED_UTF8 = ((b"\xef\xbf\xbe", b"\\ufffe"), (b"\xef\xbf\xbf", b"\\uffff"))
# Characters beyond the BMP (4-byte UTF-8, lead bytes F0-F4): SQS takes them, but SQS-protocol servers that
# check UTF-16 code units (fauxqs) refuse them, so they go out as surrogate-pair escapes too.
_FOUR_BYTE_LEAD = re.compile(rb"[\xf0-\xf4]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _surrogate_escape(match: re.Match[str]) -> str:
    code = ord(match.group()) - 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def sqs_safe(body: bytes) -> bytes:
    """`body` (JSON) with U+FFFE, U+FFFF and characters beyond the BMP written as JSON `\\u` escapes: the
    same JSON value, so every valid payload is publishable and parses back unchanged."""
    if body.isascii():  # the usual case: one scan at C speed
        return body
    if b"\xef\xbf" in body:
        for raw, escaped in _SQS_REFUSED_UTF8:
            body = body.replace(raw, escaped)
    if _FOUR_BYTE_LEAD.search(body):
        body = _ASTRAL.sub(_surrogate_escape, body.decode()).encode()
    return body


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
            # The relay's sessions hand timestamps over in UTC already (relay.store.SESSION_SETTINGS).
            "occurredAt": occurred_at if occurred_at.tzinfo is dt.UTC else occurred_at.astimezone(dt.UTC),
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
    if cloudevents.is_cloudevent(envelope):
        return _from_cloudevent(message, envelope, body)
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
        **_from_attributes(message, None, None),
    )


def _from_cloudevent(message: dict[str, Any], event: dict[str, Any], body: str) -> InboundEvent:
    try:
        fields = cloudevents.parse_cloudevent(event)
    except ValueError as exc:
        raise MalformedMessageError(str(exc)) from None
    try:
        event_id = uuid.UUID(fields.event_id)
    except ValueError:
        raise MalformedMessageError(f"CloudEvent id {fields.event_id!r} is not a UUID") from None
    return InboundEvent(
        event_id=event_id,
        event_type=fields.event_type,
        aggregate_type=fields.aggregate_type,
        aggregate_id=fields.aggregate_id,
        occurred_at=fields.occurred_at,
        data=fields.data,
        body=body,
        message_id=message.get("MessageId", ""),
        receipt_handle=message["ReceiptHandle"],
        receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
        **_from_attributes(message, fields.traceparent, fields.tracestate),
    )


def _from_attributes(
    message: dict[str, Any], traceparent: str | None, tracestate: str | None
) -> dict[str, Any]:
    """Trace context and replay mark from the message attributes. The attributes' trace context (the
    relay's send span) wins over the body's (the writer's span): the consumer's span continues the send."""
    attributes = message.get("MessageAttributes") or {}

    def value(name: str) -> str | None:
        found = attributes.get(name, {}).get("StringValue")
        return found if isinstance(found, str) and found else None

    if value("traceparent"):
        traceparent, tracestate = value("traceparent"), value("tracestate")
    return {
        "traceparent": traceparent,
        "tracestate": tracestate,
        "replayed": value(REPLAY_ATTRIBUTE) == "1",
    }
