"""Publishers: what the relay hands claimed events to. SQS FIFO for real; a null one for benchmarks.

A publisher sorts every failure into one of two kinds, because the relay treats them very differently:
- broker-wide (raised as `BrokerUnavailableError`: denied, unreachable, throttled, 5xx): nothing is wrong
  with the events, so no attempt is counted and the relay's circuit opens;
- per entry (returned as `EntryFailure`): this event was refused; `permanent` ones are dead-lettered at
  once, the others retried with backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from txoutbox.errors import BrokerUnavailableError

# SQS accepts only these characters in a message body (and attribute values).
_SQS_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Printable ASCII, tab, LF and CR: a body made only of these (the usual case) is checked without decoding
# it (a fifth of the cost); any other body goes through the regular expression above.
_SQS_SAFE_ASCII = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x80)])
SQS_MAX_BATCH_ENTRIES = 10
SQS_MAX_BATCH_BYTES = 262_144  # the strictest total SendMessageBatch size any SQS region has enforced

# Error codes that say the broker as a whole is unavailable to us, not that an event is bad.
_BROKER_WIDE_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "KMS.AccessDeniedException",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
        "KmsThrottled",
        "RequestThrottled",
        "Throttling",
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "OverLimit",
    }
)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One claimed event, encoded for the wire."""

    row_id: int
    event_id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    body: bytes

    @property
    def size(self) -> int:
        """Bytes SQS counts against its limit: the body plus the message attributes."""
        return (
            len(self.body) + len(self.event_type) + 36 + len("eventType") + len("eventId") + 2 * len("String")
        )


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """The broker (or a local check) refused one message of a batch."""

    index: int
    code: str
    message: str
    permanent: bool

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


def encode_envelope(
    event_id: uuid.UUID,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    occurred_at: dt.datetime,
    payload_json: str,
) -> bytes:
    """The message body: `{eventId, eventType, aggregateType, aggregateId, occurredAt, data}`.

    `payload_json` is the stored JSON text, spliced in as it is (no decode and re-encode).
    """
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


class Publisher(Protocol):
    """Sends batches of messages to a broker."""

    max_batch_entries: int
    max_batch_bytes: int

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        """Refuse locally what the broker would refuse for good (size, characters), without a call."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        """Send one batch; return the failed entries (by index). Raise BrokerUnavailableError if the
        broker as a whole did not take it."""

    async def close(self) -> None:
        """Release connections."""


class NullPublisher:
    """Accepts everything at once: the engine's own ceiling (claim, encode, acknowledge) in benchmarks."""

    max_batch_entries = 10
    max_batch_bytes = SQS_MAX_BATCH_BYTES

    def __init__(self) -> None:
        self.sent = 0

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        return None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        self.sent += len(messages)
        return []

    async def close(self) -> None:
        return None


def memoize_user_agent(client: Any) -> None:
    """Build botocore's User-Agent header once per set of feature ids instead of twice per request.

    botocore assembles and sanitises the header from about ten components for every request (in
    `_convert_to_request_dict` and again in a `request-created` handler): some 15 % of the CPU of a
    SendMessageBatch call. The string depends only on the client's fixed configuration and on the feature
    ids recorded for the request, so it is cached by those ids; the header sent is unchanged. If botocore's
    internals differ from what this expects, nothing is changed.
    """
    creator = getattr(client, "_user_agent_creator", None)
    build = getattr(creator, "to_string", None)
    if creator is None or build is None:
        return
    try:
        from botocore.context import get_context
    except ImportError:  # pragma: no cover - older botocore
        return
    cache: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def to_string() -> str:
        ctx = get_context()
        key = (
            frozenset(getattr(creator, "_client_features", None) or ()),
            frozenset(ctx.features) if ctx is not None else frozenset(),
        )
        header = cache.get(key)
        if header is None:
            header = cache[key] = str(build())
        return header

    creator.to_string = to_string


class SqsPublisher:
    """Amazon SQS FIFO (or any SQS-protocol server) through aiobotocore.

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
        self._exit_stack: Any = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from contextlib import AsyncExitStack

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
                self._client = client
                self._exit_stack = stack
        return self._client

    async def open(self) -> None:
        """Create the client now (imports, service model: about half a second), not on the first send."""
        await self._get_client()

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
        client = await self._get_client()
        entries = [
            {
                "Id": str(i),
                "MessageBody": m.body.decode(),
                "MessageGroupId": m.aggregate_id,
                "MessageDeduplicationId": m.event_id.hex,
                "MessageAttributes": {
                    "eventType": {"DataType": "String", "StringValue": m.event_type},
                    "eventId": {"DataType": "String", "StringValue": str(m.event_id)},
                },
            }
            for i, m in enumerate(messages)
        ]
        try:
            response = await client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            failure = classify(exc)
            if isinstance(failure, BrokerUnavailableError):
                raise failure from exc
            if len(messages) > 1:
                # The request as a whole was refused for its content: find the culprit by sending alone.
                failures: list[EntryFailure] = []
                for i, m in enumerate(messages):
                    failures += [
                        EntryFailure(i, f.code, f.message, f.permanent) for f in await self.send_batch([m])
                    ]
                return failures
            return [EntryFailure(0, failure.code, failure.message, failure.permanent)]
        return [
            EntryFailure(
                int(f["Id"]),
                f.get("Code", "Unknown"),
                f.get("Message", ""),
                permanent=bool(f.get("SenderFault")),
            )
            for f in response.get("Failed", [])
        ]

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
            self._client = self._exit_stack = None


def classify(exc: BaseException) -> BrokerUnavailableError | EntryFailure:
    """The one place where broker errors are translated: broker-wide, or about the request's content."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")) or str(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        short = code.rsplit("#", 1)[-1]
        if short in _BROKER_WIDE_CODES or status >= 500 or status in (401, 403, 429):
            return BrokerUnavailableError(short, message)
        if short in {
            "InvalidMessageContents",
            "MessageTooLong",
            "InvalidParameterValue",
            "BatchRequestTooLong",
        }:
            return EntryFailure(0, short, message, permanent=short != "BatchRequestTooLong")
        return EntryFailure(0, short, message, permanent=False)
    if isinstance(exc, BotoCoreError | OSError | asyncio.TimeoutError):
        return BrokerUnavailableError(type(exc).__name__, str(exc) or "no answer")
    return BrokerUnavailableError(type(exc).__name__, str(exc))
