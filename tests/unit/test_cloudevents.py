"""CloudEvents 1.0 structured messages: what the relay encodes, the SDK reads, the consumer parses."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat

from txoutbox.cloudevents import CONTENT_TYPE, encode_cloudevent, sequence_of
from txoutbox.wire import REPLAY_ATTRIBUTE, MalformedMessageError, encode, encode_envelope, parse_message

WHEN = dt.datetime(2026, 11, 25, 3, 4, 5, 678000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _body(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "row_id": 42,
        "event_id": uuid.UUID("0195a1b2-0000-7000-8000-000000000001"),
        "event_type": "FlightBooked",
        "aggregate_type": "Flight",
        "aggregate_id": "17",
        "occurred_at": WHEN,
        "payload_json": '{"id": 17, "to": "London"}',
        "source": "/flights",
    }
    fields.update(overrides)
    return encode_cloudevent(**fields)  # type: ignore[arg-type]


def test_the_cloudevents_sdk_reads_every_attribute() -> None:
    event = JSONFormat().read(None, _body(traceparent=TRACEPARENT, tracestate="vendor=1"))
    assert event.get_specversion() == "1.0"
    assert event.get_id() == "0195a1b2-0000-7000-8000-000000000001"
    assert event.get_source() == "/flights"
    assert event.get_type() == "FlightBooked"
    assert event.get_subject() == "17"
    assert event.get_time() == WHEN
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("partitionkey") == "17"
    assert event.get_extension("sequence") == "0000000000000000042"
    assert event.get_extension("aggregatetype") == "Flight"
    assert event.get_extension("traceparent") == TRACEPARENT
    assert event.get_extension("tracestate") == "vendor=1"
    assert event.get_data() == {"id": 17, "to": "London"}
    assert JSONFormat.CONTENT_TYPE == CONTENT_TYPE


def test_no_trace_extension_without_a_trace_context() -> None:
    assert "traceparent" not in orjson.loads(_body())
    assert "tracestate" not in orjson.loads(_body(tracestate="vendor=1"))  # a state needs its parent


def test_sequence_sorts_as_a_string_in_row_order() -> None:
    ids = [9, 10, 11, 99, 100, 2**63 - 1]
    assert sorted(map(sequence_of, ids)) == [sequence_of(i) for i in ids]
    assert len(sequence_of(2**63 - 1)) == len(sequence_of(1))


def _sqs(body: bytes, attributes: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "Body": body.decode(),
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Attributes": {"ApproximateReceiveCount": "2"},
        "MessageAttributes": {
            k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()
        },
    }


def test_the_consumer_reads_both_formats_alike() -> None:
    event_id = uuid.uuid4()
    common = {
        "event_id": event_id,
        "event_type": "FlightBooked",
        "aggregate_type": "Flight",
        "aggregate_id": "17",
        "occurred_at": WHEN,
        "payload_json": '{"id": 17}',
    }
    envelope = parse_message(_sqs(encode("envelope", row_id=5, **common)))  # type: ignore[arg-type]
    cloud = parse_message(_sqs(encode("cloudevents", row_id=5, **common)))  # type: ignore[arg-type]
    assert envelope.body != cloud.body
    for name in ("event_id", "event_type", "aggregate_type", "aggregate_id", "data", "receive_count"):
        assert getattr(envelope, name) == getattr(cloud, name), name
    assert cloud.occurred_at == envelope.occurred_at == "2026-11-25T02:04:05.678000Z"
    assert encode("envelope", row_id=5, **common) == encode_envelope(  # type: ignore[arg-type]
        event_id, "FlightBooked", "Flight", "17", WHEN, '{"id": 17}'
    )


def test_trace_context_and_replay_mark_come_from_body_or_attributes() -> None:
    in_body = parse_message(_sqs(_body(traceparent=TRACEPARENT)))
    assert (in_body.traceparent, in_body.replayed) == (TRACEPARENT, False)
    send_span = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    attrs = parse_message(
        _sqs(_body(traceparent=TRACEPARENT), {"traceparent": send_span, REPLAY_ATTRIBUTE: "1"})
    )
    assert (attrs.traceparent, attrs.replayed) == (send_span, True)  # the relay's send span continues


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"id": None}, "lacks id"),
        ({"id": "not-a-uuid"}, "not a UUID"),
        ({"subject": None, "partitionkey": None}, "aggregate id"),
        ({"datacontenttype": "application/xml"}, "datacontenttype"),
    ],
)
def test_malformed_cloudevents_are_refused_with_a_reason(change: dict[str, object], reason: str) -> None:
    event = orjson.loads(_body())
    event.update(change)
    with pytest.raises(MalformedMessageError, match=reason):
        parse_message(_sqs(orjson.dumps({k: v for k, v in event.items() if v is not None})))


def test_an_event_from_another_producer_needs_no_aggregatetype() -> None:
    event = orjson.loads(_body())
    del event["aggregatetype"], event["subject"]
    parsed = parse_message(_sqs(orjson.dumps(event)))
    assert (parsed.aggregate_type, parsed.aggregate_id) == ("", "17")


def test_settings_choose_the_format_source_and_retention() -> None:
    from txoutbox.config import RelaySettings
    from txoutbox.errors import ConfigurationError

    default = RelaySettings.from_env({})
    assert (default.message_format, default.event_source, default.retention_days) == (
        "envelope",
        "/txoutbox",
        0,
    )
    chosen = RelaySettings.from_env(
        {
            "TXOUTBOX_MESSAGE_FORMAT": "CloudEvents",
            "TXOUTBOX_EVENT_SOURCE": "/flights",
            "TXOUTBOX_RETENTION_DAYS": "7",
        }
    )
    assert (chosen.message_format, chosen.event_source, chosen.retention_days) == (
        "cloudevents",
        "/flights",
        7,
    )
    with pytest.raises(
        ConfigurationError, match="TXOUTBOX_MESSAGE_FORMAT must be one of envelope, cloudevents"
    ):
        RelaySettings.from_env({"TXOUTBOX_MESSAGE_FORMAT": "xml"})
    with pytest.raises(ConfigurationError, match="TXOUTBOX_RETENTION_DAYS must be a whole number from 0"):
        RelaySettings.from_env({"TXOUTBOX_RETENTION_DAYS": "-1"})
