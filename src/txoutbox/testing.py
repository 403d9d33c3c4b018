"""Test kit for applications using txoutbox: a pytest plugin (loaded automatically once txoutbox is
installed) and helpers that run the real code paths against a real PostgreSQL.

Fixtures (PostgreSQL from `--txoutbox-database-url`, or `TXOUTBOX_TEST_DATABASE_URL`, or `DATABASE_URL`; a
role that may create databases):

- `txoutbox_database_url`: a throwaway database with every migration applied (txoutbox's and those of
  every app registered under `txoutbox.migrations`), dropped after the test;
- `txoutbox_conn`: a psycopg connection to it (autocommit: open your own `conn.transaction()`).

Helpers:

- `assert_event_written_with(conn, "flights", {"id": 7}, event_type="FlightBooked")`: the row and a matching
  outbox event were written by the same transaction (PostgreSQL's `xmin`);
- `drain(database_url)`: the real relay, synchronously, into a `MemoryPublisher`, until the outbox is empty;
  returns what was published (`.events` as a consumer receives them);
- `run_handler(database_url, handler, events)`: the consumer's real inbox-and-handler path on given events.

    def test_booking_writes_its_event(txoutbox_database_url):
        with psycopg.connect(txoutbox_database_url) as conn:
            flight_id = book(conn, "Paris", "London")            # your code: flight + add_event
        with psycopg.connect(txoutbox_database_url) as conn:
            assert_event_written_with(conn, "flights", {"id": flight_id}, event_type="FlightBooked")
        published = drain(txoutbox_database_url)
        assert [e.data["id"] for e in published.events] == [flight_id]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from txoutbox import queries
from txoutbox.config import DEFAULT_REGION, RelaySettings, Settings
from txoutbox.migrate import apply_migrations, resolve_components
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.wire import InboundEvent, parse_message

__all__ = [
    "DrainResult",
    "HandlerRun",
    "MemoryPublisher",
    "assert_event_written_with",
    "drain",
    "drain_async",
    "run_handler",
    "run_handler_async",
]

T = TypeVar("T")
MEMORY_QUEUE_URL = "memory://txoutbox-testing"
_URL_ENV = ("TXOUTBOX_TEST_DATABASE_URL", "DATABASE_URL")


# -- the assertion -------------------------------------------------------------------------------------


def assert_event_written_with(
    conn: psycopg.Connection[Any],
    table: str,
    where: Mapping[str, Any],
    *,
    event_type: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assert that the one row of `table` matching `where` and an outbox event matching the filters were
    written by the same transaction; return the event's outbox row.

    Compares PostgreSQL's `xmin` (the writing transaction's id), so check before anything updates either
    row (a relay's lease is an update). `table` may be schema-qualified; `payload` must be contained in the
    event's payload.
    """
    rows = conn.execute(
        sql.SQL("SELECT xmin::text AS xmin FROM {} WHERE {}").format(
            sql.Identifier(*table.split(".")),
            sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where)
            or sql.SQL("true"),
        ),
        list(where.values()),
    ).fetchall()
    if len(rows) != 1:
        raise AssertionError(f"expected one row of {table} where {dict(where)}, found {len(rows)}")
    xmin = rows[0][0] if not isinstance(rows[0], dict) else rows[0]["xmin"]
    filters = {"event_type": event_type, "aggregate_type": aggregate_type, "aggregate_id": aggregate_id}
    with conn.cursor(row_factory=dict_row) as cur:
        events = cur.execute(queries.OUTBOX_EVENTS_WITH_XMIN).fetchall()
    matching = [
        e
        for e in events
        if all(v is None or e[k] == v for k, v in filters.items())
        and (payload is None or _contains(e["payload"], payload))
    ]
    same = [e for e in matching if e["xmin"] == xmin]
    if len(same) == 1:
        return same[0]
    wanted = {k: v for k, v in {**filters, "payload": payload}.items() if v is not None}
    if not same:
        in_tx = [(e["event_type"], e["aggregate_id"]) for e in events if e["xmin"] == xmin]
        raise AssertionError(
            f"no outbox event {wanted} was written in the transaction that wrote {table} {dict(where)}; "
            f"that transaction wrote {in_tx or 'no events'}; {len(matching)} matching event(s) came from "
            "other transactions"
        )
    raise AssertionError(f"{len(same)} outbox events {wanted} were written with {table} {dict(where)}")


def _contains(value: Any, expected: Mapping[str, Any]) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in expected.items())


# -- in-memory publishing ------------------------------------------------------------------------------


@dataclass
class MemoryPublisher:
    """A Publisher keeping every message it is given, in order; refuses nothing but what SQS would."""

    max_batch_entries: int = 10
    max_batch_bytes: int = 262_144
    max_message_bytes: int = 262_144
    messages: list[OutgoingMessage] = field(default_factory=list)

    def check(self, message: OutgoingMessage) -> EntryFailure | None:
        if message.size > self.max_message_bytes:
            return EntryFailure(0, "MessageTooLong", f"message is {message.size} bytes", permanent=True)
        return None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        self.messages.extend(messages)
        return []

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None


def received(message: OutgoingMessage, n: int = 0) -> InboundEvent:
    """An outgoing message as a consumer would receive it (the same parser)."""
    attributes = {k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()}
    return parse_message(
        {
            "Body": message.body.decode(),
            "MessageId": f"memory-{n}",
            "ReceiptHandle": f"memory-{n}",
            "Attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": message.aggregate_id},
            "MessageAttributes": attributes,
        }
    )


@dataclass
class DrainResult:
    """What a drain published, in publishing order."""

    messages: list[OutgoingMessage]

    @property
    def events(self) -> list[InboundEvent]:
        return [received(m, n) for n, m in enumerate(self.messages)]


def _settings(database_url: str, relay: RelaySettings | None = None) -> Settings:
    quick = replace(relay or RelaySettings(), poll_interval=0.05, heartbeat_seconds=1.0, shutdown_timeout=5.0)
    return Settings(
        database_url=database_url,
        sqs_queue_url=MEMORY_QUEUE_URL,
        sqs_dlq_url=None,
        sqs_endpoint_url=None,
        aws_region=DEFAULT_REGION,
        local_stack=True,
        relay=quick,
    )


async def drain_async(
    database_url: str,
    *,
    publisher: MemoryPublisher | None = None,
    relay: RelaySettings | None = None,
    within_seconds: float = 10.0,
) -> DrainResult:
    """Run the real relay into `publisher` until the outbox is empty; AssertionError after `within_seconds`.

    `relay` tunes it (e.g. `message_format="cloudevents"`, `retention_days`)."""
    from txoutbox.relay import Relay

    publisher = publisher or MemoryPublisher()
    start = len(publisher.messages)
    stop = asyncio.Event()
    engine = Relay(_settings(database_url, relay), publisher)
    task = asyncio.create_task(engine.run(stop))
    deadline = time.monotonic() + within_seconds
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while True:
                row = await (await conn.execute(queries.OUTBOX_COUNT)).fetchone()
                left = int(row[0]) if row else 0
                if left == 0:
                    break
                if time.monotonic() > deadline or task.done():
                    raise AssertionError(f"{left} event(s) still in the outbox after {within_seconds:g} s")
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return DrainResult(publisher.messages[start:])


def drain(database_url: str, **kwargs: Any) -> DrainResult:
    """`drain_async`, synchronously (also from inside an async test)."""
    return _run(drain_async(database_url, **kwargs))


# -- running a consumer handler ------------------------------------------------------------------------


@dataclass
class HandlerRun:
    processed: int  # events the handler ran for
    duplicates: int  # events the inbox recognised
    acknowledged: list[InboundEvent]  # what a receive loop would delete (empty when the handler failed)


async def run_handler_async(
    database_url: str,
    handler: Callable[[psycopg.AsyncConnection[Any], Sequence[InboundEvent]], Awaitable[None]],
    events: Sequence[InboundEvent | OutgoingMessage],
    *,
    consumer: str = "test",
    reprocess_replayed: bool = False,
) -> HandlerRun:
    """Run `handler` on `events` through the consumer's inbox, in one transaction, as a received batch."""
    from txoutbox.consumer import Consumer

    inbound = [e if isinstance(e, InboundEvent) else received(e, n) for n, e in enumerate(events)]
    runner = Consumer(
        _settings(database_url), consumer, handler, concurrency=1, reprocess_replayed=reprocess_replayed
    )
    acknowledged = await runner.process(inbound)
    return HandlerRun(runner.processed, runner.duplicates, acknowledged)


def run_handler(database_url: str, handler: Any, events: Sequence[Any], **kwargs: Any) -> HandlerRun:
    """`run_handler_async`, synchronously."""
    return _run(run_handler_async(database_url, handler, events, **kwargs))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from a running loop (an async test): run it on a loop of its own in a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- the pytest plugin ---------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--txoutbox-database-url",
        default=None,
        help="PostgreSQL for txoutbox.testing's throwaway databases (default: TXOUTBOX_TEST_DATABASE_URL, "
        "DATABASE_URL).",
    )


@pytest.fixture(scope="session")
def txoutbox_server_url(request: pytest.FixtureRequest) -> str:
    """Where throwaway databases are created; override this fixture to provide your own server."""
    url = request.config.getoption("--txoutbox-database-url") or next(
        (os.environ[n] for n in _URL_ENV if os.environ.get(n)), None
    )
    if not url:
        pytest.skip(
            "txoutbox.testing needs PostgreSQL: --txoutbox-database-url or TXOUTBOX_TEST_DATABASE_URL"
        )
    return str(url)


def _with_database(url: str, name: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=name)


@pytest.fixture(scope="session")
def _txoutbox_template(txoutbox_server_url: str) -> Iterator[str]:
    name = f"txoutbox_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(txoutbox_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        apply_migrations(_with_database(txoutbox_server_url, name), resolve_components(None))
        yield name
    finally:
        _drop(txoutbox_server_url, name)


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def txoutbox_database_url(txoutbox_server_url: str, _txoutbox_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test (a copy of a template migrated once per session)."""
    name = f"txoutbox_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(txoutbox_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(_txoutbox_template)
            )
        )
    try:
        yield _with_database(txoutbox_server_url, name)
    finally:
        _drop(txoutbox_server_url, name)


@pytest.fixture
def txoutbox_conn(txoutbox_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the throwaway database."""
    with psycopg.connect(txoutbox_database_url, autocommit=True) as conn:
        yield conn
