"""CloudEvents 1.0 on the wire: the structured-mode JSON message (`application/cloudevents+json`).

SQS has no CloudEvents binding, so the whole event goes in the body:

    {"specversion": "1.0", "id": "<event id>", "source": "/txoutbox", "type": "FlightBooked",
     "subject": "<aggregate id>", "time": "2026-11-25T01:02:03.456Z", "datacontenttype": "application/json",
     "partitionkey": "<aggregate id>", "sequence": "0000000000000000042", "aggregatetype": "Flight",
     "traceparent": "00-...", "data": {...}}

- `id` is the event id, also the SQS MessageDeduplicationId; `partitionkey` (partitioning extension) is the
  aggregate id, also the MessageGroupId.
- `sequence` (sequence extension) is the outbox row id, zero-padded to 19 digits (a bigint's width) so it
  sorts as a string: row ids grow with commit order within an aggregate, so sequence orders an aggregate's
  events (across aggregates it says nothing).
- `aggregatetype` is an extension of ours (consumers need it to route); `traceparent` / `tracestate`
  (distributed-tracing extension) carry the context the event was written in, when there is one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "/txoutbox"
SEQUENCE_WIDTH = 19  # digits of the largest bigint, the outbox id's type
_REQUIRED = ("id", "source", "type")


@dataclass(frozen=True, slots=True)
class CloudEventFields:
    """What a consumer needs from a CloudEvents message."""

    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: str
    data: Any
    traceparent: str | None
    tracestate: str | None


def sequence_of(row_id: int) -> str:
    """The outbox row id as a `sequence` value that sorts as a string."""
    return str(row_id).zfill(SEQUENCE_WIDTH)


def encode_cloudevent(
    *,
    row_id: int,
    event_id: uuid.UUID,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    occurred_at: dt.datetime,
    payload_json: str,
    source: str = DEFAULT_SOURCE,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> bytes:
    """The message body. `payload_json` is the stored JSON text, spliced in as it is."""
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": str(event_id),
        "source": source,
        "type": event_type,
        "subject": aggregate_id,
        "time": occurred_at.astimezone(dt.UTC),
        "datacontenttype": "application/json",
        "partitionkey": aggregate_id,
        "sequence": sequence_of(row_id),
        "aggregatetype": aggregate_type,
    }
    if traceparent:
        event["traceparent"] = traceparent
        if tracestate:
            event["tracestate"] = tracestate
    event["data"] = orjson.Fragment(payload_json)
    return orjson.dumps(event, option=orjson.OPT_UTC_Z)


def is_cloudevent(body: dict[str, Any]) -> bool:
    """A decoded message body in CloudEvents structured mode (rather than the txoutbox envelope)."""
    return "specversion" in body


def parse_cloudevent(body: dict[str, Any]) -> CloudEventFields:
    """The fields of a decoded CloudEvents body; ValueError saying what is missing or unsupported."""
    if body.get("specversion") != SPEC_VERSION:
        raise ValueError(f"CloudEvents specversion {body.get('specversion')!r} is not {SPEC_VERSION!r}")
    missing = [k for k in _REQUIRED if not isinstance(body.get(k), str) or not body[k]]
    if missing:
        raise ValueError(f"CloudEvent lacks {', '.join(missing)}")
    aggregate_id = body.get("subject") or body.get("partitionkey")
    if not isinstance(aggregate_id, str):
        raise ValueError("CloudEvent has neither subject nor partitionkey (the aggregate id)")
    if "data" not in body:
        raise ValueError("CloudEvent has no data")
    content_type = body.get("datacontenttype", "application/json")
    if not str(content_type).startswith("application/json"):
        raise ValueError(f"CloudEvent datacontenttype {content_type!r} is not application/json")
    traceparent = body.get("traceparent")
    tracestate = body.get("tracestate")
    return CloudEventFields(
        event_id=body["id"],
        event_type=body["type"],
        aggregate_type=str(body.get("aggregatetype", "")),  # absent from other producers' events
        aggregate_id=aggregate_id,
        occurred_at=str(body.get("time", "")),
        data=body["data"],
        traceparent=traceparent if isinstance(traceparent, str) else None,
        tracestate=tracestate if isinstance(tracestate, str) else None,
    )
