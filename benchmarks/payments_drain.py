"""The consumer: one `txoutbox payments` process draining 50,000 queued FlightBooked events.

The events are enqueued before the consumer starts (concurrent SendMessageBatch of 10, the envelope the
relay sends, one aggregate per flight as the booking API writes them), so the consumer alone is timed:
from its start-up line until the payments table holds every event (inbox insert, payment insert and the
seed's log line per event included; the log goes to a file, as it would to CloudWatch).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.infra import (
    ARRIVAL,
    ARRIVAL_AT,
    DEPARTURE,
    DEPARTURE_AT,
    REGION,
    Child,
    RssSampler,
    Stack,
    TreeCpu,
    cpu_meter,
    postmaster_pid,
    python_module,
    txoutbox,
)
from txoutbox.connections import aio_sqs_client


def _entry(i: int, flight_id: int) -> dict[str, Any]:
    event_id = uuid.uuid4()
    body = orjson.dumps(
        {
            "eventId": str(event_id),
            "eventType": "FlightBooked",
            "aggregateType": "Flight",
            "aggregateId": str(flight_id),
            "occurredAt": "2026-11-24T12:00:00.000000Z",
            "data": {
                "id": flight_id,
                "departureAirport": DEPARTURE,
                "arrivalAirport": ARRIVAL,
                "departureDateTime": DEPARTURE_AT,
                "arrivalDateTime": ARRIVAL_AT,
            },
        }
    ).decode()
    return {
        "Id": str(i),
        "MessageBody": body,
        "MessageGroupId": str(flight_id),
        "MessageDeduplicationId": event_id.hex,
        "MessageAttributes": {
            "eventType": {"DataType": "String", "StringValue": "FlightBooked"},
            "eventId": {"DataType": "String", "StringValue": str(event_id)},
        },
    }


async def _enqueue(endpoint: str, queue_url: str, events: int, concurrency: int = 16) -> None:
    batches = [
        [_entry(i, start + i + 1) for i in range(min(10, events - start))] for start in range(0, events, 10)
    ]
    async with aio_sqs_client(REGION, endpoint, local=True, max_connections=concurrency) as client:
        it = iter(batches)

        async def sender() -> None:
            for batch in it:
                response = await client.send_message_batch(QueueUrl=queue_url, Entries=batch)
                if response.get("Failed"):
                    raise RuntimeError(f"enqueue failed: {response['Failed'][:1]}")

        await asyncio.gather(*(sender() for _ in range(concurrency)))


def enqueue(stack: Stack, queue_url: str, events: int) -> float:
    started = time.perf_counter()
    asyncio.run(_enqueue(stack.endpoint_url, queue_url, events))
    return time.perf_counter() - started


@dataclass
class PaymentsResult:
    events: int
    seconds: float
    events_per_s: float
    peak_rss_mb: float
    cpu_share: dict[str, float]
    log_lines: int


# Receivers of the payment service and of the bare loop it is held to: enough long polls in flight to
# cover the service's transaction per batch (with 4 it reached 0.75-0.78x the bare loop, with 8 0.87-0.91x).
RECEIVERS = 8


def drain_payments(
    stack: Stack, logdir: Path, *, events: int = 50_000, label: str = "pay", timeout: float = 120.0
) -> PaymentsResult:
    stack.truncate()
    queues = stack.new_queues(label)
    enqueue(stack, queues.queue_url, events)
    log_path = logdir / f"{label}-payments.log"
    consumer = Child(
        txoutbox("payments", "--concurrency", str(RECEIVERS)),
        stack.env(queues),
        log_path,
        ready_line="consumer started",
    )
    try:
        consumer.wait_ready()
        assert stack.pg is not None
        assert stack.fauxqs is not None
        assert stack.fauxqs.pid is not None
        pg_cpu = TreeCpu(postmaster_pid(stack.pg.data_dir))
        fauxqs_cpu = TreeCpu(stack.fauxqs.pid)
        sampler = RssSampler([consumer.pid])
        with psycopg.connect(stack.database_url, autocommit=True) as conn, cpu_meter([consumer.pid]) as cpu:
            start = consumer.ready_at or time.monotonic()
            while True:
                row = conn.execute("SELECT count(*) FROM public.payments").fetchone()
                done = int(row[0]) if row else 0
                now = time.monotonic()
                sampler.sample(now - start)
                if done >= events:
                    break
                if now - start > timeout:
                    raise RuntimeError(f"payments: only {done} of {events} paid after {timeout} s")
                time.sleep(0.1)
            seconds = time.monotonic() - start
            other = {"postgres": pg_cpu.used(), "fauxqs": fauxqs_cpu.used()}
        peak = sampler.peak_mb()
    finally:
        consumer.stop()
        stack.delete_queues(queues)
    lines = sum(1 for line in log_path.open(errors="replace") if "Processing payment" in line)
    share = {"consumer": cpu["total"] / seconds, **{k: v / seconds for k, v in other.items()}}
    return PaymentsResult(events, seconds, events / seconds, peak, share, lines)


def drain_bare(stack: Stack, *, events: int, concurrency: int = RECEIVERS, timeout: float = 120.0) -> float:
    """The bare receive + delete loop (benchmarks.bare) on a queue filled the same way; its events/s."""
    queues = stack.new_queues("bare-recv")
    try:
        enqueue(stack, queues.queue_url, events)
        proc = subprocess.run(
            python_module(
                "benchmarks.bare",
                "receive",
                queues.queue_url,
                stack.endpoint_url,
                str(events),
                str(concurrency),
            ),
            capture_output=True,
            text=True,
            env=stack.env(),
            timeout=timeout,
            check=True,
        )
    finally:
        stack.delete_queues(queues)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["events_per_s"])
