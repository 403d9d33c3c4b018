"""Steady load, end to end: bookings committed at a fixed rate, timed to SQS and to the payment row.

Two helper processes, each run as `python -m benchmarks.e2e ...`:

- `writer DATABASE_URL RATE SECONDS WARMUP OUT.csv`: books flights the way the API does (INSERT the flight
  RETURNING it, `txoutbox.add_event_async` with the stored flight, COMMIT: one transaction per booking),
  paced on a fixed schedule (booking i is due at start + i / RATE), from 4 connections so one slow commit
  does not hold the schedule back, for WARMUP + SECONDS seconds (the first WARMUP seconds are marked: they
  are not counted). It records, per event id, `time.time()` right after COMMIT returned.
- `observer QUEUE_URL ENDPOINT EXPECTED TIMEOUT OUT.csv`: receives from the queue with `SentTimestamp` (the
  time SQS accepted the message, epoch milliseconds), deletes, and records per event id that timestamp,
  until EXPECTED events were seen or TIMEOUT seconds passed.

The commit time of a booking is PostgreSQL's own (`track_commit_timestamp = on`, read as
`pg_xact_commit_timestamp(xmin)` of the flight row, which commits with its event): the writer's clock after
COMMIT returns is late by however long its process waited for the CPU, which on two busy cores is
milliseconds. Commit -> SQS accepted = SentTimestamp + 0.5 ms - commit time: SentTimestamp is whole
milliseconds (truncated), so the midpoint of its millisecond is the unbiased estimate (resolution +-0.5 ms).
Commit -> payment = `payments.processed_at` (now() of the payment's transaction) - commit time. All clocks
are the wall clock of the same machine.
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.infra import ARRIVAL, DEPARTURE, REGION
from flights.models import flight_json
from flights.queries import INSERT_FLIGHT
from txoutbox.connections import aio_sqs_client
from txoutbox.event import Event
from txoutbox.writer import add_event_async


async def _writer(database_url: str, rate: float, seconds: float, warmup: float, out: Path) -> None:
    import datetime as dt

    total = int(rate * (warmup + seconds))
    warm = int(rate * warmup)
    departure = dt.datetime(2023, 9, 1, 8, 0, tzinfo=dt.UTC)
    arrival = dt.datetime(2023, 9, 1, 9, 15, tzinfo=dt.UTC)
    records: list[tuple[str, int, float, float, int]] = []
    next_index = 0
    conns = [await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(4)]
    # Warm up every connection (prepared statements, caches) before the clock starts.
    for conn in conns:
        await conn.execute("SELECT 1")
    print("writing", flush=True)
    start = time.perf_counter() + 0.05
    wall_offset = time.time() - time.perf_counter()
    # A writer that cannot keep the pace (the rate comes from the database's limit, which Python writers may
    # not reach on a quiet machine) stops on time and reports what it did: the results show the rate reached.
    stop_at = start + warmup + seconds + 5

    async def worker(conn: psycopg.AsyncConnection[Any]) -> None:
        nonlocal next_index
        while next_index < total and time.perf_counter() < stop_at:
            index = next_index
            next_index += 1
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with conn.transaction():
                cur = await conn.execute(
                    INSERT_FLIGHT,
                    {
                        "departure_airport": DEPARTURE,
                        "arrival_airport": ARRIVAL,
                        "departure_date_time": departure,
                        "arrival_date_time": arrival,
                    },
                )
                row = await cur.fetchone()
                assert row is not None
                stored = flight_json(*row)
                event_id = await add_event_async(
                    conn, Event("Flight", str(stored["id"]), "FlightBooked", stored)
                )
            committed = time.perf_counter()
            records.append(
                (
                    str(event_id),
                    int(stored["id"]),
                    committed + wall_offset,
                    committed - due,
                    int(index < warm),
                )
            )

    await asyncio.gather(*(worker(conn) for conn in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        await conn.close()
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "flight_id", "client_commit_epoch", "schedule_lag_s", "warmup"])
        w.writerows(records)
    print(f"done {len(records)} {elapsed:.3f}", flush=True)


async def _observer(queue_url: str, endpoint: str, expected: int, seconds: float, out: Path) -> None:

    seen: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    async with aio_sqs_client(REGION, endpoint, local=True, max_connections=16, read_timeout=10) as client:
        print("observing", flush=True)

        async def loop() -> None:
            while time.monotonic() < deadline and len(seen) < expected:
                response = await client.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    AttributeNames=["SentTimestamp"],
                    MessageAttributeNames=["eventId"],
                )
                messages = response.get("Messages", [])
                if len(messages) < 10:
                    # Measurement apparatus, not the system under test: SentTimestamp is set when SQS
                    # accepts the message, so receiving later changes no figure. Let messages gather
                    # instead of spending the CPU the relay needs on a receive per message.
                    await asyncio.sleep(0.05)
                if not messages:
                    continue
                for m in messages:
                    event_id = m["MessageAttributes"]["eventId"]["StringValue"]
                    seen.setdefault(event_id, int(m["Attributes"]["SentTimestamp"]))
                await client.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )

        await asyncio.gather(*(loop() for _ in range(4)))
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "sent_ms"])
        w.writerows(seen.items())
    print(f"done {len(seen)}", flush=True)


@dataclass
class Booking:
    event_id: str
    flight_id: int
    client_commit: float  # epoch seconds when COMMIT returned to the writer
    schedule_lag: float  # seconds the booking started after it was due
    warmup: bool
    commit: float = 0.0  # epoch seconds of the commit, from PostgreSQL (track_commit_timestamp)


def read_bookings(path: Path, database_url: str) -> list[Booking]:
    """The writer's bookings with the server's commit time of each (flight row and event share the xact)."""
    with path.open() as f:
        bookings = [
            Booking(
                r["event_id"],
                int(r["flight_id"]),
                float(r["client_commit_epoch"]),
                float(r["schedule_lag_s"]),
                r["warmup"] == "1",
            )
            for r in csv.DictReader(f)
        ]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM public.flights"
        ).fetchall()
    commits = {int(r[0]): r[1] for r in rows}
    for b in bookings:
        at = commits.get(b.flight_id)
        b.commit = float(at) if at is not None else b.client_commit
    return bookings


def read_sent(path: Path) -> dict[str, float]:
    with path.open() as f:
        return {row["event_id"]: int(row["sent_ms"]) / 1000.0 + 0.0005 for row in csv.DictReader(f)}


def read_payments(database_url: str) -> dict[str, float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id, extract(epoch FROM processed_at)::float8 FROM public.payments"
        ).fetchall()
    return {str(uuid.UUID(str(r[0]))): float(r[1]) for r in rows}


def main() -> None:
    mode = sys.argv[1]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    if mode == "writer":
        run(
            _writer(
                sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), Path(sys.argv[6])
            )
        )
    elif mode == "observer":
        run(_observer(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), Path(sys.argv[6])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
