"""The message on the wire, local refusals, error translation and message parsing."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from txoutbox.errors import BrokerUnavailableError
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.publishers.sqs import SqsPublisher
from txoutbox.publishers.sqs_errors import classify
from txoutbox.wire import MalformedMessageError, encode, encode_envelope, parse_message


def test_envelope_fields_and_data_spliced_verbatim() -> None:
    event_id = uuid.uuid4()
    when = dt.datetime(2023, 9, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    body = encode_envelope(event_id, "FlightBooked", "Flight", "12", when, '{"id": 12, "to": "London"}')
    assert orjson.loads(body) == {
        "eventId": str(event_id),
        "eventType": "FlightBooked",
        "aggregateType": "Flight",
        "aggregateId": "12",
        "occurredAt": "2023-09-01T08:00:00Z",
        "data": {"id": 12, "to": "London"},
    }


def _message(body: bytes) -> OutgoingMessage:
    return OutgoingMessage(1, uuid.uuid4(), "Flight", "1", "FlightBooked", body)


def test_local_check_refuses_oversized_and_forbidden_characters() -> None:
    publisher = SqsPublisher("http://q", region="eu-west-1", max_message_bytes=1024)
    assert publisher.check(_message(b"x" * 900)) is None
    too_big = publisher.check(_message(b"x" * 1024))
    assert too_big is not None and too_big.permanent and too_big.code == "MessageTooLong"
    bad = publisher.check(_message('{"a": "\uffff"}'.encode()))
    assert bad is not None and bad.permanent and "U+FFFF" in bad.message
    assert publisher.check(_message('{"a": "caf\u00e9 \U0001f600"}'.encode())) is None


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendMessageBatch",
    )


@pytest.mark.parametrize(
    ("exc", "broker_wide"),
    [
        (_client_error("AccessDenied", 403), True),
        (_client_error("com.amazon.coral.service#AccessDeniedException", 400), True),
        (_client_error("ThrottlingException", 400), True),
        (_client_error("InternalError", 500), True),
        (_client_error("AWS.SimpleQueueService.NonExistentQueue", 400), True),
        (_client_error("InvalidClientTokenId", 403), True),  # bad credentials
        (_client_error("SignatureDoesNotMatch", 403), True),  # wrong secret or region
        (_client_error("AuthorizationHeaderMalformed", 400), True),  # wrong region in the signature
        (_client_error("MissingAuthenticationToken", 400), True),
        (NoCredentialsError(), True),
        (  # group ids sent to a standard queue
            ClientError(
                {
                    "Error": {
                        "Code": "InvalidParameterValue",
                        "Message": "The request include parameter that is not valid for this queue type",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "SendMessageBatch",
            ),
            True,
        ),
        (_client_error("InvalidParameterValue", 400), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (TimeoutError(), True),
        (_client_error("InvalidMessageContents", 400), False),
        (_client_error("BatchRequestTooLong", 400), False),
    ],
)
def test_errors_are_translated_at_one_choke_point(exc: Exception, broker_wide: bool) -> None:
    result = classify(exc)
    assert isinstance(result, BrokerUnavailableError if broker_wide else EntryFailure)


def test_parse_message_reads_the_envelope_and_names_what_is_wrong() -> None:
    event_id = uuid.uuid4()
    body = orjson.dumps(
        {
            "eventId": str(event_id),
            "eventType": "FlightBooked",
            "aggregateType": "Flight",
            "aggregateId": "1",
            "data": {"id": 1},
        }
    ).decode()
    event = parse_message(
        {"Body": body, "ReceiptHandle": "r", "MessageId": "m", "Attributes": {"ApproximateReceiveCount": "3"}}
    )
    assert (event.event_id, event.data, event.receive_count) == (event_id, {"id": 1}, 3)
    for bad, reason in [
        ("nope", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"eventId": "x"}', "lacks"),
        (body.replace(str(event_id), "zzz"), "not a UUID"),
    ]:
        with pytest.raises(MalformedMessageError, match=reason):
            parse_message({"Body": bad, "ReceiptHandle": "r"})


def test_characters_sqs_refuses_go_out_as_escapes_and_parse_back_unchanged() -> None:
    data = {"to": "Par\ufffeis\uffff", "k\uffff": "caf\u00e9 \U0001f600", "ctl": "\u0001\t"}
    body = encode(
        "envelope",
        row_id=1,
        event_id=uuid.uuid4(),
        event_type="FlightBooked",
        aggregate_type="Flight",
        aggregate_id="1",
        occurred_at=dt.datetime.now(dt.UTC),
        payload_json=orjson.dumps(data).decode(),
    )
    assert b"\xef\xbf\xbf" not in body and b"\\uffff" in body and b"\\ud83d\\ude00" in body
    assert SqsPublisher("http://q", region="eu-west-1").check(_message(body)) is None
    event = parse_message({"Body": body.decode(), "ReceiptHandle": "r"})
    assert event.data == data
