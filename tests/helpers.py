"""Shared test helpers: bounded polls, seeding the outbox, running a relay in-process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg

from devstack.waiting import poll as poll  # the one bounded wait, re-exported for the tests
from txoutbox import Event, add_event, add_events, ops
from txoutbox.config import DEFAULT_REGION, RelaySettings, Settings
from txoutbox.publishers import Publisher
from txoutbox.publishers.sqs import SqsPublisher
from txoutbox.relay import Relay


def tcp_sockets(port: int, state: str) -> list[tuple[str, str]]:
    """(local address, socket inode) of every TCP socket on local `port` in `state` (the kernel's code:
    01 established, 0A listening), from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == state and int(port_hex, 16) == port:
                found.append((address, fields[9]))
    return found


def db_only_settings(database_url: str, **relay: Any) -> Settings:
    """Settings for a relay store (or a relay with its own publisher) on this database, no queue."""
    return Settings(
        database_url=database_url,
        sqs_queue_url=None,
        sqs_dlq_url=None,
        sqs_endpoint_url=None,
        aws_region=DEFAULT_REGION,
        local_stack=True,
        relay=dataclasses.replace(RelaySettings(), **relay),
    )


def write_event(database_url: str, aggregate: str, event_type: str = "E") -> None:
    """One Order event of `aggregate`, in a transaction of its own."""
    with psycopg.connect(database_url) as conn:
        add_event(conn, Event("Order", aggregate, event_type, {}))


def write_in_thread(
    database_url: str, aggregate: str, event_type: str
) -> tuple[threading.Thread, threading.Event]:
    """`write_event` in a thread (to see a writer wait on another): the thread, and an event set when the
    write has committed."""
    done = threading.Event()

    def write() -> None:
        write_event(database_url, aggregate, event_type)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    return thread, done


async def apoll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


def seed_events(database_url: str, per_aggregate: dict[str, int], *, payload_size: int = 0) -> list[Event]:
    """Write events round-robin over the aggregates (so their ids interleave), in one transaction."""
    events: list[Event] = []
    counters = dict.fromkeys(per_aggregate, 0)
    while any(counters[a] < n for a, n in per_aggregate.items()):
        for aggregate, n in per_aggregate.items():
            if counters[aggregate] < n:
                events.append(
                    Event(
                        "Flight",
                        aggregate,
                        "FlightBooked",
                        {"seq": counters[aggregate], "pad": "x" * payload_size},
                    )
                )
                counters[aggregate] += 1
    with psycopg.connect(database_url) as conn:
        add_events(conn, events)
    return events


def sqs_publisher(settings: Settings) -> SqsPublisher:
    assert settings.sqs_queue_url
    return SqsPublisher(
        settings.sqs_queue_url,
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        local_credentials=True,
        timeout_seconds=2,
    )


@contextlib.asynccontextmanager
async def running(service: Any) -> AsyncIterator[Any]:
    """Run `service.run(stop)` (a relay, a consumer) in the background; stop it and wait on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def book_in_process(settings: Settings, booking: dict[str, Any]) -> dict[str, Any]:
    """POST one booking to the flights app in process (its lifespan, so its pool, included); the answer."""
    import httpx

    from flights.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flights.test") as client:
            response = await client.post("/api/flights", json=booking)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def running_relay(
    settings: Settings, publisher: Publisher | None = None, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[Relay]:
    return running(Relay(settings, publisher or sqs_publisher(settings), **kwargs))  # type: ignore[no-any-return]


def outbox_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return ops.outbox_count(conn)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `txoutbox relay|payments` subprocess pointed at the test's database and queues."""
    import os
    import sys
    from pathlib import Path

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SQS_", "PG", "DATABASE_URL", "TXOUTBOX_"))
    }
    env.update(
        DATABASE_URL=settings.database_url,
        SQS_QUEUE_URL=settings.sqs_queue_url or "",
        SQS_DLQ_URL=settings.sqs_dlq_url or "",
        SQS_ENDPOINT_URL=settings.sqs_endpoint_url or "",
        AWS_REGION=settings.aws_region,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        TXOUTBOX_HOME=str(Path(sys.prefix) / "no-stack"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start_service(settings: Settings, *args: str, log_path: Any = None, **extra: str) -> Any:
    import subprocess
    import sys
    from pathlib import Path

    out = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "txoutbox"), *args],
        env=service_env(settings, **extra),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def seed_flight_events(database_url: str, count: int, start: int = 1) -> None:
    """`count` FlightBooked events shaped like the API's, for flights start..start+count-1."""
    with psycopg.connect(database_url) as conn:
        add_events(
            conn,
            [
                Event("Flight", str(n), "FlightBooked", {"id": n, "departureAirport": "Paris"})
                for n in range(start, start + count)
            ],
        )
