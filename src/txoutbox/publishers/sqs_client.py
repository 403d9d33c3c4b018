"""Tuning of the aiobotocore SQS client used on the hot path (relay publishing, consumer receiving).

The client itself is created by `txoutbox.connections.aio_sqs_client`; this module holds what makes it
cheaper per request.
"""

from __future__ import annotations

from typing import Any

import orjson


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


def serialize_batches_with_orjson(client: Any) -> None:
    """Write SendMessageBatch request bodies with orjson in one call.

    botocore's serializer walks the service model for every entry and each of its attributes, then
    encodes the result with the json module: some 15 % of the relay's CPU while it publishes. For this
    operation's input (strings in structures, maps and lists) it writes the parameters exactly as they
    are, so the body here is the parameters as JSON, and the rest of the request (method, path, headers:
    the operation's target, the query-compatible header) is botocore's own for the same queue with no
    entries. Other operations are untouched. If botocore's internals differ from what this expects,
    nothing is changed.
    """
    serializer = getattr(client, "_serializer", None)
    serialize = getattr(serializer, "serialize_to_request", None)
    if serializer is None or serialize is None:
        return

    def serialize_to_request(parameters: dict[str, Any], operation_model: Any) -> dict[str, Any]:
        if operation_model.name != "SendMessageBatch":
            return serialize(parameters, operation_model)  # type: ignore[no-any-return]
        request: dict[str, Any] = serialize(
            {"QueueUrl": parameters["QueueUrl"], "Entries": []}, operation_model
        )
        request["body"] = orjson.dumps(parameters)
        return request

    serializer.serialize_to_request = serialize_to_request
