"""Amazon SQS FIFO (or any SQS-protocol server) as the relay's broker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from txoutbox.errors import BrokerUnavailableError
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.publishers.sqs_client import memoize_user_agent, serialize_batches_with_orjson
from txoutbox.publishers.sqs_errors import classify, queue_wide
from txoutbox.tracing import SendSpans

# SQS accepts only these characters in a message body (and attribute values).
_SQS_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Printable ASCII, tab, LF and CR: a body made only of these (the usual case) is checked without decoding
# it (a fifth of the cost); any other body goes through the regular expression above.
_SQS_SAFE_ASCII = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x80)])
SQS_MAX_BATCH_ENTRIES = 10
SQS_MAX_BATCH_BYTES = 262_144  # the strictest total SendMessageBatch size any SQS region has enforced


class SqsPublisher:
    """Publishes through aiobotocore's SendMessageBatch.

    MessageGroupId = aggregate id (order per aggregate), MessageDeduplicationId = event id (a re-sent event
    within SQS's 5-minute window is dropped by SQS itself), attributes `eventType` and `eventId`.
    """

    max_batch_entries = SQS_MAX_BATCH_ENTRIES
    max_batch_bytes = SQS_MAX_BATCH_BYTES

    def __init__(
        self,
        queue_url: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        local_credentials: bool = False,
        max_message_bytes: int = 262_144,
        max_connections: int = 16,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.queue_url = queue_url
        self.max_message_bytes = max_message_bytes
        self._region = region
        self._endpoint_url = endpoint_url
        self._local_credentials = local_credentials
        self._max_connections = max_connections
        self._timeout = timeout_seconds
        self._client: Any = None
        self._exit_stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from txoutbox.connections import aio_sqs_client

                stack = AsyncExitStack()
                client = await stack.enter_async_context(
                    aio_sqs_client(
                        self._region,
                        self._endpoint_url,
                        local=self._local_credentials,
                        max_connections=self._max_connections,
                        connect_timeout=self._timeout,
                        read_timeout=self._timeout,
                        validate_parameters=False,  # the entries are built here, never by a user
                    )
                )
                memoize_user_agent(client)
                serialize_batches_with_orjson(client)
                self._client = client
                self._exit_stack = stack
        return self._client

    async def open(self) -> None:
        """Create the client now (imports, service model: about half a second), not on the first send."""
        await self._get_client()

    async def probe(self) -> None:
        """GetQueueAttributes: the queue exists, we may use it, and it is FIFO (a standard queue would
        lose the per-aggregate order; fauxqs, unlike SQS, even accepts group ids on one)."""
        client = await self._get_client()
        try:
            response = await client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["FifoQueue"]
            )
        except Exception as exc:
            failure = classify(exc)
            if isinstance(failure, BrokerUnavailableError):
                raise failure from exc
            raise BrokerUnavailableError(failure.code, failure.message) from exc
        if response.get("Attributes", {}).get("FifoQueue") != "true":
            raise BrokerUnavailableError(
                "QueueNotFifo", "the queue is not a FIFO queue; txoutbox needs one (name ending in .fifo)"
            )

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        if message.size > self.max_message_bytes:
            return EntryFailure(
                0,
                "MessageTooLong",
                f"message is {message.size} bytes, over the queue's limit of {self.max_message_bytes} bytes",
                permanent=True,
            )
        body = message.body
        safe = body.isascii() and not body.translate(None, _SQS_SAFE_ASCII)
        bad = None if safe else _SQS_INVALID_CHARS.search(body.decode())
        if bad:
            return EntryFailure(
                0,
                "InvalidMessageContents",
                f"payload contains the character U+{ord(bad.group()):04X}, which SQS does not accept",
                permanent=True,
            )
        return None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        spans = SendSpans(self.queue_url, messages)
        sent: dict[int, str] = {}
        try:
            failures = await self._send(messages, range(len(messages)), spans, sent)
        except BrokerUnavailableError as exc:
            spans.finish(sent, {}, broker_error=str(exc))
            raise
        spans.finish(sent, {f.index: f.reason for f in failures})
        return failures

    async def _send(
        self,
        messages: Sequence[OutgoingMessage],
        indexes: Sequence[int],
        spans: SendSpans,
        sent: dict[int, str],
    ) -> list[EntryFailure]:
        """Send `messages` (at `indexes` of the caller's batch); failures by the caller's index; the SQS
        MessageId of each sent message into `sent`."""
        client = await self._get_client()
        entries = []
        for i, m in zip(indexes, messages, strict=True):
            attributes = {
                "eventType": {"DataType": "String", "StringValue": m.event_type},
                "eventId": {"DataType": "String", "StringValue": str(m.event_id)},
            }
            for k, v in m.attributes.items():
                attributes[k] = {"DataType": "String", "StringValue": v}
            if spans.spans:
                attributes.update(spans.message_attributes(i))
            entries.append(
                {
                    "Id": str(i),
                    "MessageBody": m.body.decode(),
                    "MessageGroupId": m.aggregate_id,
                    "MessageDeduplicationId": m.deduplication_id or m.event_id.hex,
                    "MessageAttributes": attributes,
                }
            )
        try:
            response = await client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            failure = classify(exc)
            if isinstance(failure, BrokerUnavailableError):
                raise failure from exc
            if len(messages) > 1:
                # The request as a whole was refused for its content: find the culprit by sending alone.
                failures: list[EntryFailure] = []
                for i, m in zip(indexes, messages, strict=True):
                    failures += await self._send([m], [i], spans, sent)
                return failures
            return [EntryFailure(indexes[0], failure.code, failure.message, failure.permanent)]
        for entry in response.get("Successful", []):
            sent[int(entry["Id"])] = entry.get("MessageId", "")
        failures = parse_batch_failures(response)
        for f in failures:
            misconfigured = queue_wide(f.code, f.message)
            if misconfigured is not None:
                raise misconfigured
        return failures

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
            self._client = self._exit_stack = None


def parse_batch_failures(response: dict[str, Any]) -> list[EntryFailure]:
    """The per-entry `Failed` list of a SendMessageBatch answer: `SenderFault` ones are permanent."""
    return [
        EntryFailure(
            int(f["Id"]),
            f.get("Code", "Unknown"),
            f.get("Message", ""),
            permanent=bool(f.get("SenderFault")),
        )
        for f in response.get("Failed", [])
    ]
