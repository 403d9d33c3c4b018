"""Steady load, end to end: bookings committed at a fixed rate, timed to SQS and to the payment row.

- The load: pgbench runs the booking transaction (`db_limit.script("booking")`, the statements the booking
  API runs) at a fixed rate (`-R`, Poisson arrivals, as independent users book) from 8 connections on one
  thread. A C load generator reaches half the database's limit on a quiet machine, which Python writers
  could not (they reached ~1,400 of ~3,000 bookings/s), and it leaves the relay its CPU.
- `python -m benchmarks.e2e observer QUEUE_URL ENDPOINT TIMEOUT OUT.csv`: receives from the queue with
  `SentTimestamp` (the time SQS accepted the message, epoch milliseconds) and `MessageGroupId` (the
  aggregate id: the flight's id), deletes, and records per flight that timestamp, until SIGTERM or TIMEOUT
  seconds passed; then writes OUT.csv. It runs after the load (SentTimestamp is set when SQS accepts a
  message, so reading later changes no figure): during it, it would take CPU from the relay.

The commit time of a booking is PostgreSQL's own (`track_commit_timestamp = on`, read as
`pg_xact_commit_timestamp(xmin)` of the flight row, which commits with its event). Commit -> SQS accepted =
SentTimestamp + 0.5 ms - commit time: SentTimestamp is whole milliseconds (truncated), so the midpoint of
its millisecond is the unbiased estimate (resolution +-0.5 ms). Commit -> payment = `payments.processed_at`
(now() of the payment's transaction) - commit time. All clocks are the wall clock of the same machine.
Every booking is one flight and one event, so the flight id matches the three records.
"""

from __future__ import annotations

import asyncio
import csv
import re
import signal
import sys
import time
from pathlib import Path

import psycopg

from benchmarks.db_limit import pgbench_command, script
from benchmarks.infra import REGION
from txoutbox.connections import aio_sqs_client

PGBENCH_CLIENTS = 8  # enough that a slow commit does not hold the schedule back
_LAG = re.compile(r"^rate limit schedule lag: avg ([\d.]+) \(max ([\d.]+)\) ms", re.M)


def writer_command(bin_path: Path, database_url: str, rate: float, seconds: int, workdir: Path) -> list[str]:
    """pgbench booking at `rate` per second for `seconds` (one thread: it needs a few % of a core)."""
    path = workdir / "steady-booking.sql"
    path.write_text(script("booking"))
    return pgbench_command(
        bin_path, database_url, path, clients=PGBENCH_CLIENTS, threads=1, seconds=seconds, rate=rate
    )


def schedule_lag_ms(output: str) -> tuple[float, float]:
    """pgbench's schedule lag (average, max) in ms: how late transactions started against the rate."""
    m = _LAG.search(output)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


async def _observer(queue_url: str, endpoint: str, seconds: float, out: Path) -> None:
    seen: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aio_sqs_client(REGION, endpoint, local=True, max_connections=8, read_timeout=10) as client:
        print("observing", flush=True)

        async def loop() -> None:
            while time.monotonic() < deadline and not stop.is_set():
                response = await client.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    AttributeNames=["SentTimestamp", "MessageGroupId"],
                )
                messages = response.get("Messages", [])
                if not messages:
                    continue
                for m in messages:
                    flight_id = int(m["Attributes"]["MessageGroupId"])
                    seen.setdefault(flight_id, int(m["Attributes"]["SentTimestamp"]))
                await client.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )

        await asyncio.gather(*(loop() for _ in range(8)))
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["flight_id", "sent_ms"])
        w.writerows(seen.items())
    print(f"done {len(seen)}", flush=True)


def read_commits(database_url: str) -> dict[int, float]:
    """Flight id -> the server's commit time of its booking (epoch seconds; flight and event share it)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM public.flights"
        ).fetchall()
    return {int(r[0]): float(r[1]) for r in rows if r[1] is not None}


def read_sent(path: Path) -> dict[int, float]:
    with path.open() as f:
        return {int(row["flight_id"]): int(row["sent_ms"]) / 1000.0 + 0.0005 for row in csv.DictReader(f)}


def read_payments(database_url: str) -> dict[int, float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT flight_id, extract(epoch FROM processed_at)::float8 FROM public.payments"
        ).fetchall()
    return {int(r[0]): float(r[1]) for r in rows}


def main() -> None:
    mode = sys.argv[1]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    if mode == "observer":
        run(_observer(sys.argv[2], sys.argv[3], float(sys.argv[4]), Path(sys.argv[5])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
