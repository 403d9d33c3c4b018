"""One trace from POST /api/flights through the relay's send to the payment's processing (OpenTelemetry SDK,
in-memory exporter, real PostgreSQL and fauxqs); and without OpenTelemetry nothing is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from payments.service import CONSUMER_NAME, process_payments
from tests.helpers import apoll, book_in_process, outbox_count, running, running_relay
from txoutbox import Event, add_event
from txoutbox.config import Settings
from txoutbox.consumer import Consumer

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows one) exporting to memory."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


BOOKING = {
    "departureAirport": "Paris",
    "arrivalAirport": "London",
    "departureDateTime": "2026-12-01T08:00:00Z",
    "arrivalDateTime": "2026-12-01T09:15:00Z",
}


def _paid(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM public.payments").fetchone()
        return int(row[0]) if row else 0


def _one(spans: list[ReadableSpan], kind: SpanKind, prefix: str) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind and s.name.startswith(prefix)]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def test_booking_relay_send_and_payment_are_one_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    await book_in_process(settings, BOOKING)
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute("SELECT traceparent FROM txoutbox.outbox").fetchone()
    assert stored is not None and stored[0] and stored[0].startswith("00-")

    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    async with running(Consumer(settings, CONSUMER_NAME, process_payments, concurrency=1, wait_seconds=1)):
        assert await apoll(lambda: _paid(settings.database_url) == 1, 15)

    finished = list(spans.get_finished_spans())
    server = _one(finished, SpanKind.SERVER, "POST")
    send = _one(finished, SpanKind.PRODUCER, "send ")
    process = _one(finished, SpanKind.CONSUMER, "process ")
    trace_id = server.context.trace_id
    assert send.context.trace_id == process.context.trace_id == trace_id  # one trace
    # the send continues the context stored with the row (the request's), the processing continues the send
    assert stored[0].split("-")[1] == f"{trace_id:032x}"
    assert send.parent is not None and send.parent.span_id == int(stored[0].split("-")[2], 16)
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert [link.context.trace_id for link in process.links] == [trace_id]
    queue = settings.sqs_queue_url.rsplit("/", 1)[-1]  # type: ignore[union-attr]
    assert send.name == f"send {queue}" and process.name == f"process {queue}"
    assert send.attributes is not None and process.attributes is not None
    assert {k: send.attributes[k] for k in ("messaging.system", "messaging.operation.type")} == {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "send",
    }
    assert send.attributes["messaging.destination.name"] == queue
    assert send.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
    assert process.attributes["messaging.operation.type"] == "process"


async def test_events_written_outside_a_span_make_no_spans(
    settings: Settings, spans: InMemorySpanExporter, receive_all: Any
) -> None:
    with psycopg.connect(settings.database_url) as conn:
        add_event(conn, Event("Flight", "1", "FlightBooked", {"id": 1}))
        row = conn.execute("SELECT traceparent, tracestate FROM txoutbox.outbox").fetchone()
    assert row == (None, None)
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    [message] = receive_all(settings.sqs_queue_url, 1)
    assert set(message["MessageAttributes"]) == {"eventType", "eventId"}
    assert spans.get_finished_spans() == ()


WRITER = """
import sys
{block}
import psycopg, txoutbox
with psycopg.connect({url!r}) as conn:
    txoutbox.add_event(conn, txoutbox.Event("Flight", "9", "FlightBooked", {{"id": 9}}))
    print(conn.execute("SELECT traceparent FROM txoutbox.outbox").fetchone()[0])
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""

# Makes `import opentelemetry` fail, as if it were not installed.
NOT_INSTALLED = """
import importlib.abc
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NotInstalled())
"""


@pytest.mark.parametrize("installed", [False, True], ids=["not-installed", "installed-but-unused"])
def test_the_writer_imports_no_opentelemetry(database_url: str, installed: bool) -> None:
    code = WRITER.format(block="" if installed else textwrap.dedent(NOT_INSTALLED), url=database_url)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None", "[]"]
