"""One trace from the writer to the consumer, with OpenTelemetry when it is there (extra `otel`).

- `add_event` stores the W3C trace context of the current span with the row (`traceparent`, `tracestate`).
- The relay sends every event that has one inside a PRODUCER span `send <queue>`, a child of that context,
  with the SQS messaging attributes, and puts the send span's context on the message (attributes
  `traceparent` / `tracestate`; a CloudEvents message also carries the writer's context in its body).
- The consumer runs the handler inside a CONSUMER span `process <queue>`, a child of the first event's
  context and linked to every event's.

Nothing here imports OpenTelemetry unless it is needed: the writer looks only if the application has already
imported `opentelemetry.trace` (without that, no span can be current), and the relay and the consumer only
for messages that carry a trace context. Without OpenTelemetry installed nothing changes.
Spans go wherever the application's tracer provider sends them (e.g. run the relay under
`opentelemetry-instrument txoutbox relay`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

TRACE_MODULE = "opentelemetry.trace"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MESSAGING_SYSTEM = "aws_sqs"


class Traced(Protocol):
    """Anything carrying a stored trace context (an outgoing or an inbound message)."""

    @property
    def traceparent(self) -> str | None: ...

    @property
    def tracestate(self) -> str | None: ...


def current_trace_context() -> tuple[str | None, str | None]:
    """(traceparent, tracestate) of the current span; (None, None) when there is none.

    Imports nothing when the application has not imported OpenTelemetry itself.
    """
    if TRACE_MODULE not in sys.modules:
        return None, None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get(TRACEPARENT), carrier.get(TRACESTATE)


@cache
def _available() -> bool:
    return importlib.util.find_spec("opentelemetry") is not None


@cache
def _propagator() -> Any:
    # The W3C propagator itself, not the globally configured one: the columns and attributes are W3C.
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@cache
def _tracer() -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer("txoutbox")


def _context(traced: Traced) -> Any:
    carrier = {TRACEPARENT: traced.traceparent or ""}
    if traced.tracestate:
        carrier[TRACESTATE] = traced.tracestate
    return _propagator().extract(carrier)


def queue_name(queue_url: str) -> str:
    """`messaging.destination.name` of an SQS queue: the last part of its URL."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def _attributes(operation: str, queue: str, count: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": queue,
    }
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    return attributes


class SendSpans:
    """The PRODUCER spans of one SendMessageBatch: one per traced message, each a child of its context."""

    def __init__(self, queue_url: str, messages: Sequence[Traced]) -> None:
        self.spans: dict[int, Span] = {}
        if not _available() or not any(m.traceparent for m in messages):
            return
        from opentelemetry.trace import SpanKind

        queue = queue_name(queue_url)
        for index, message in enumerate(messages):
            if message.traceparent:
                self.spans[index] = _tracer().start_span(
                    f"send {queue}",
                    context=_context(message),
                    kind=SpanKind.PRODUCER,
                    attributes=_attributes("send", queue, len(messages)),
                )

    def message_attributes(self, index: int) -> dict[str, dict[str, str]]:
        """The SQS message attributes carrying the send span's context to the consumer."""
        span = self.spans.get(index)
        if span is None:
            return {}
        from opentelemetry.trace import set_span_in_context

        carrier: dict[str, str] = {}
        _propagator().inject(carrier, context=set_span_in_context(span))
        return {k: {"DataType": "String", "StringValue": v} for k, v in carrier.items()}

    def finish(
        self, message_ids: Mapping[int, str], errors: Mapping[int, str], broker_error: str = ""
    ) -> None:
        """End the spans: the SQS MessageId of each sent message, or the reason it was not sent."""
        if not self.spans:
            return
        from opentelemetry.trace import StatusCode

        for index, span in self.spans.items():
            error = errors.get(index) or broker_error
            if error:
                span.set_attribute("error.type", error.split(":", 1)[0])
                span.set_status(StatusCode.ERROR, error)
            elif index in message_ids:
                span.set_attribute("messaging.message.id", message_ids[index])
            span.end()


def send_size(traced: Traced) -> int:
    """Bytes the trace attributes add to a message (SQS counts attribute names, types and values)."""
    if not traced.traceparent:
        return 0
    size = len(TRACEPARENT) + len("String") + len(traced.traceparent)
    if traced.tracestate:
        size += len(TRACESTATE) + len("String") + len(traced.tracestate)
    return size


@contextlib.contextmanager
def process_span(queue_url: str, events: Sequence[Traced], message_id: str = "") -> Iterator[None]:
    """A CONSUMER span `process <queue>` around the handler, when any event carries a trace context."""
    traced = [e for e in events if e.traceparent]
    if not traced or not _available():
        yield
        return
    from opentelemetry.trace import Link, SpanKind, get_current_span

    contexts = [_context(e) for e in traced]
    links = [Link(get_current_span(c).get_span_context()) for c in contexts]
    queue = queue_name(queue_url)
    attributes = _attributes("process", queue, len(events))
    if len(events) == 1 and message_id:
        attributes["messaging.message.id"] = message_id
    with _tracer().start_as_current_span(
        f"process {queue}", context=contexts[0], kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        yield
