"""Tuning of the aiobotocore SQS client used on the hot path (relay publishing, consumer receiving).

The client itself is created by `txoutbox.connections.aio_sqs_client`; this module holds what makes it
cheaper per request.
"""

from __future__ import annotations

from typing import Any


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
