"""The SQS dead-letter queue of a consumer, for operators: list its messages, move them back."""

from __future__ import annotations

import uuid
from typing import Any

from txoutbox.config import Settings
from txoutbox.connections import sqs_client
from txoutbox.errors import BrokerUnavailableError, ConfigurationError
from txoutbox.publishers.sqs_errors import classify


def client(settings: Settings) -> Any:
    return sqs_client(
        settings.aws_region, settings.sqs_endpoint_url, local=settings.local_stack, read_timeout=10
    )


def _dlq_url(settings: Settings) -> str:
    if not settings.sqs_dlq_url:
        raise ConfigurationError("no dead-letter queue configured: set SQS_DLQ_URL (or run `txoutbox up`)")
    return settings.sqs_dlq_url


def _call(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:
        failure = classify(exc)
        raise BrokerUnavailableError(failure.code, failure.message) from None


def _drain(sqs: Any, url: str, limit: int, hide_seconds: int) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < limit:
        got = _call(
            sqs.receive_message,
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            WaitTimeSeconds=1,
            VisibilityTimeout=hide_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in got if m["MessageId"] not in seen]
        if not fresh:
            break
        for m in fresh:
            seen[m["MessageId"]] = m
    return list(seen.values())


def dlq_list(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """The DLQ's messages (up to `limit`), left in the DLQ: they are made visible again right away."""
    sqs = client(settings)
    url = _dlq_url(settings)
    messages = _drain(sqs, url, limit, hide_seconds=30)
    for m in messages:
        _call(
            sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    return [
        {
            "message_id": m["MessageId"],
            "group_id": m.get("Attributes", {}).get("MessageGroupId"),
            "event_id": m.get("MessageAttributes", {}).get("eventId", {}).get("StringValue"),
            "event_type": m.get("MessageAttributes", {}).get("eventType", {}).get("StringValue"),
            "receive_count": int(m.get("Attributes", {}).get("ApproximateReceiveCount", "0")),
            "body": m.get("Body", ""),
        }
        for m in messages
    ]


def dlq_redrive(settings: Settings, limit: int = 10_000) -> int:
    """Move DLQ messages back to the main queue (same group, body and attributes); return how many.

    Each gets a new deduplication id (the original is still in SQS's 5-minute window and would be dropped);
    the consumer's inbox still makes sure an event is never paid twice.
    """
    if not settings.sqs_queue_url:
        raise ConfigurationError("no queue configured: set SQS_QUEUE_URL (or run `txoutbox up`)")
    sqs = client(settings)
    url = _dlq_url(settings)
    moved = 0
    while moved < limit:
        messages = _drain(sqs, url, min(10, limit - moved), hide_seconds=60)
        if not messages:
            break
        entries = [
            {
                "Id": str(i),
                "MessageBody": m["Body"],
                "MessageGroupId": m.get("Attributes", {}).get("MessageGroupId") or "redrive",
                "MessageDeduplicationId": f"redrive-{uuid.uuid4().hex}",
                "MessageAttributes": {
                    k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
                    for k, v in m.get("MessageAttributes", {}).items()
                    if "StringValue" in v
                },
            }
            for i, m in enumerate(messages)
        ]
        result = _call(sqs.send_message_batch, QueueUrl=settings.sqs_queue_url, Entries=entries)
        sent = [messages[int(s["Id"])] for s in result.get("Successful", [])]
        if sent:
            _call(
                sqs.delete_message_batch,
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)],
            )
        moved += len(sent)
        if result.get("Failed"):
            failure = result["Failed"][0]
            raise BrokerUnavailableError(failure.get("Code", "Unknown"), failure.get("Message", ""))
    return moved
