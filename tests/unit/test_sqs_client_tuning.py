"""The SQS client's tuning changes how a request is built, never what is sent (publishers.sqs_client)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from txoutbox.connections import aio_sqs_client
from txoutbox.publishers.sqs_client import serialize_batches_with_orjson

QUEUE = "http://127.0.0.1:1/000000000000/q.fifo"


def _entry(i: int, body: str) -> dict[str, Any]:
    # As SqsPublisher builds them, trace context attributes included.
    return {
        "Id": str(i),
        "MessageBody": body,
        "MessageGroupId": f"flight-{i}",
        "MessageDeduplicationId": f"{i:032x}",
        "MessageAttributes": {
            "eventType": {"DataType": "String", "StringValue": "FlightBooked"},
            "eventId": {"DataType": "String", "StringValue": f"00000000-0000-0000-0000-{i:012d}"},
            "traceparent": {"DataType": "String", "StringValue": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        },
    }


@pytest.mark.parametrize("validate", [False, True])
async def test_a_batch_request_is_the_one_botocore_builds(validate: bool) -> None:
    params = {
        "QueueUrl": QUEUE,
        "Entries": [
            _entry(0, '{"data":{"id":1,"to":"Zürich ✈ 東京","quote":"\\"","emoji":"\\ud83d\\ude00"}}'),
            *(_entry(i, '{"data":{"id":' + str(i) + "}}") for i in range(1, 10)),
        ],
    }
    async with aio_sqs_client("eu-west-1", None, local=True, validate_parameters=validate) as client:
        batch = client.meta.service_model.operation_model("SendMessageBatch")
        other = client.meta.service_model.operation_model("SendMessage")
        single = {"QueueUrl": QUEUE, "MessageBody": "x", "MessageGroupId": "g"}
        expected = client._serializer.serialize_to_request(params, batch)
        expected_other = client._serializer.serialize_to_request(single, other)
        serialize_batches_with_orjson(client)
        got = client._serializer.serialize_to_request(params, batch)
        got_other = client._serializer.serialize_to_request(single, other)
    assert got is not expected
    assert json.loads(got.pop("body")) == json.loads(expected.pop("body"))
    assert got == expected  # method, path, query string, headers (target, query-compatible mode)
    assert got_other == expected_other  # other operations: botocore's own serializer
