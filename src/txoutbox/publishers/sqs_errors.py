"""The one place where SQS errors are translated: broker-wide (the circuit opens) or about one entry."""

from __future__ import annotations

import asyncio

from txoutbox.errors import BrokerUnavailableError
from txoutbox.publishers import EntryFailure

# Error codes that say the broker as a whole is unavailable to us, not that an event is bad: outages and
# throttling, and misconfiguration (credentials, region, permissions, a queue that does not exist). Each
# opens the circuit with its reason and costs no event an attempt.
_BROKER_WIDE_CODES = frozenset(
    {
        "AuthorizationHeaderMalformed",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "OptInRequired",
        "InvalidAddress",
        "QueueNotFifo",
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
# Refusals of a request's content: permanent for the entry, except a batch too long as a whole.
_CONTENT_CODES = frozenset(
    {"InvalidMessageContents", "MessageTooLong", "InvalidParameterValue", "BatchRequestTooLong"}
)


def queue_wide(code: str, message: str) -> BrokerUnavailableError | None:
    """A refusal that names the queue, not the entry: SQS answers `InvalidParameterValue` ("... not valid
    for this queue type") when group and deduplication ids go to a standard queue."""
    if code == "InvalidParameterValue" and "queue type" in message:
        return BrokerUnavailableError("QueueNotFifo", message)
    return None


def classify(exc: BaseException) -> BrokerUnavailableError | EntryFailure:
    """Translate an exception of an SQS call: broker-wide, or about the request's content."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")) or str(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        short = code.rsplit("#", 1)[-1]
        if short in _BROKER_WIDE_CODES or status >= 500 or status in (401, 403, 429):
            return BrokerUnavailableError(short, message)
        misconfigured = queue_wide(short, message)
        if misconfigured is not None:
            return misconfigured
        if short in _CONTENT_CODES:
            return EntryFailure(0, short, message, permanent=short != "BatchRequestTooLong")
        return EntryFailure(0, short, message, permanent=False)
    if isinstance(exc, BotoCoreError | OSError | asyncio.TimeoutError):
        return BrokerUnavailableError(type(exc).__name__, str(exc) or "no answer")
    return BrokerUnavailableError(type(exc).__name__, str(exc))
