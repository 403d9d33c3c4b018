"""The bare limits the relay and the consumer are held to, each in one Python process like them.

`python -m benchmarks.bare MODE ...` prints one JSON line:

- `sql DATABASE_URL BATCH`: claim-and-delete in a loop on one connection, on the relay's basis (a lease,
  no transaction open between claim and delete) without its order checks, encoding or lanes: lease the
  oldest BATCH due rows (UPDATE ... FROM a SELECT FOR UPDATE SKIP LOCKED, RETURNING the columns the relay
  reads), then DELETE them by id. Until the outbox is empty. `sql-held`: the textbook loop that holds its
  transaction instead (BEGIN; SELECT ... FOR UPDATE SKIP LOCKED; DELETE; COMMIT), for reference.
- `send QUEUE_URL ENDPOINT MESSAGES BATCH IN_FLIGHT`: SendMessageBatch of 10 with the relay's own client
  (`txoutbox.connections.aio_sqs_client` with the settings `SqsPublisher` uses), the relay's claim size
  (entries built BATCH at a time) and its batches in flight.
- `receive QUEUE_URL ENDPOINT MESSAGES CONCURRENCY`: receive 10 + delete in CONCURRENCY loops (the payment
  service's receivers and client settings), until MESSAGES were received.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
import uuid
from typing import Any

import psycopg

from benchmarks.infra import ARRIVAL, ARRIVAL_AT, DEPARTURE, DEPARTURE_AT, REGION
from txoutbox.connections import aio_sqs_client
from txoutbox.publishers.sqs_client import memoize_user_agent, serialize_batches_with_orjson
from txoutbox.wire import encode_envelope

# The same basis as the relay: a lease (no transaction open while the broker would be called), then the
# delete. What it leaves out is the relay's own work: per-aggregate order checks, encoding, lanes, rounds.
_LEASE = """
UPDATE txoutbox.outbox AS o
SET locked_by = 'bare', locked_until = now() + interval '30 seconds'
FROM (SELECT id FROM txoutbox.outbox
      WHERE next_attempt_at <= now() AND (locked_until IS NULL OR locked_until <= now())
      ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS c
WHERE o.id = c.id
RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload::text, o.created_at,
          o.attempts
"""
# The textbook loop that keeps its transaction (and row locks) open instead of a lease: not the relay's
# basis (it would hold a transaction across the broker call), reported for reference.
_SELECT = """
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload::text, created_at, attempts
FROM txoutbox.outbox ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
_DELETE = "DELETE FROM txoutbox.outbox WHERE id = ANY(%(ids)s)"


async def claim_and_delete(database_url: str, batch: int, held: bool) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=not held) as conn:
        await conn.execute("SELECT 1")
        if held:
            await conn.commit()
        print("draining", flush=True)
        started = time.perf_counter()
        cpu = time.process_time()
        events = 0
        while True:
            cur = await conn.execute(_SELECT if held else _LEASE, {"limit": batch})
            rows = await cur.fetchall()
            if rows:
                await conn.execute(_DELETE, {"ids": [r[0] for r in rows]})
            if held:
                await conn.commit()
            if not rows:
                break
            events += len(rows)
        seconds = time.perf_counter() - started
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


_NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def _entry(i: int, n: int) -> dict[str, Any]:
    """The entry SqsPublisher builds for a booking event (the relay's envelope, same size and attributes)."""
    event_id = uuid.uuid4()
    aggregate = str(n % 10_000 + 1)
    payload = json.dumps(
        {
            "id": n,
            "departureAirport": DEPARTURE,
            "arrivalAirport": ARRIVAL,
            "departureDateTime": DEPARTURE_AT,
            "arrivalDateTime": ARRIVAL_AT,
            "bookingSeq": n,
        }
    )
    body = encode_envelope(event_id, "FlightBooked", "Flight", aggregate, _NOW, payload)
    return {
        "Id": str(i),
        "MessageBody": body.decode(),
        "MessageGroupId": aggregate,
        "MessageDeduplicationId": event_id.hex,
        "MessageAttributes": {
            "eventType": {"DataType": "String", "StringValue": "FlightBooked"},
            "eventId": {"DataType": "String", "StringValue": str(event_id)},
        },
    }


async def send(queue_url: str, endpoint: str, messages: int, batch: int, in_flight: int) -> dict[str, Any]:
    client_cm = aio_sqs_client(
        REGION, endpoint, local=True, max_connections=in_flight, validate_parameters=False
    )
    async with client_cm as client:
        memoize_user_agent(client)  # the relay's client settings (SqsPublisher)
        serialize_batches_with_orjson(client)
        await client.send_message_batch(QueueUrl=queue_url, Entries=[_entry(0, 10**9)])  # warm-up
        gate = asyncio.Semaphore(in_flight)
        failed = 0

        async def one(entries: list[dict[str, Any]]) -> None:
            nonlocal failed
            async with gate:
                response = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
                failed += len(response.get("Failed", []))

        print("sending", flush=True)
        started = time.perf_counter()
        cpu = time.process_time()
        tasks: set[asyncio.Task[None]] = set()
        for start in range(0, messages, batch):
            # One claim's worth of entries, cut into SendMessageBatch calls of 10, at most `in_flight`
            # calls outstanding (as the relay's lanes do); the next claim is built while these fly.
            count = min(batch, messages - start)
            entries = [_entry(i % 10, start + i) for i in range(count)]
            for k in range(0, count, 10):
                task = asyncio.create_task(one(entries[k : k + 10]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while len(tasks) > in_flight + batch // 10:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    return {
        "events": messages,
        "seconds": seconds,
        "events_per_s": messages / seconds,
        "failed": failed,
        "cpu_seconds": time.process_time() - cpu,
    }


async def receive(queue_url: str, endpoint: str, messages: int, concurrency: int) -> dict[str, Any]:
    client_cm = aio_sqs_client(
        REGION,
        endpoint,
        local=True,
        max_connections=concurrency * 2,
        read_timeout=30,
        validate_parameters=False,
    )
    async with client_cm as client:
        memoize_user_agent(client)
        seen = 0
        print("receiving", flush=True)
        started = time.perf_counter()
        cpu = time.process_time()

        async def loop() -> None:
            nonlocal seen
            while seen < messages:
                response = await client.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    AttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=["All"],
                )
                got = response.get("Messages", [])
                if not got:
                    continue
                seen += len(got)
                await client.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
                )

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "events": seen,
        "seconds": seconds,
        "events_per_s": seen / seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode in ("sql", "sql-held"):
        coro = claim_and_delete(args[0], int(args[1]), held=mode == "sql-held")
    elif mode == "send":
        coro = send(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif mode == "receive":
        coro = receive(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
