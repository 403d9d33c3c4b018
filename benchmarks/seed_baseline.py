"""The original's relay, re-created in a few lines, to measure what this project is compared with.

The AWS sample's `QueueService` (see shared/REFERENCE.md): every 5 s (fixed delay) one transaction reads
the oldest 5 outbox rows under a plain pessimistic lock (`FOR UPDATE`, no SKIP LOCKED), sends them in one
SendMessageBatch, deletes them and commits - the lock held across the SQS call. Its defects (ignoring
per-entry failures, one poison event blocking everything) are kept: this is the baseline, not a relay.

    python -m benchmarks.seed_baseline DATABASE_URL QUEUE_URL ENDPOINT SECONDS

prints one JSON line: the time (seconds from start) and size of every cycle that published something.
"""

from __future__ import annotations

import json
import sys
import time

import psycopg

from benchmarks.infra import REGION
from devstack.sqs import sqs_client

FIXED_DELAY_SECONDS = 5.0
BATCH = 5
SELECT_OLDEST = "SELECT id, aggregate_id, payload::text FROM txoutbox.outbox ORDER BY id LIMIT %s FOR UPDATE"


def run(database_url: str, queue_url: str, endpoint: str, seconds: float) -> list[tuple[float, int]]:
    sqs = sqs_client(endpoint, REGION)
    cycles: list[tuple[float, int]] = []
    started = time.monotonic()
    with psycopg.connect(database_url) as conn:
        while time.monotonic() - started < seconds:
            with conn.transaction():
                rows = conn.execute(SELECT_OLDEST, (BATCH,)).fetchall()
                if rows:
                    sqs.send_message_batch(
                        QueueUrl=queue_url,
                        Entries=[
                            {
                                "Id": str(i),
                                "MessageBody": payload,
                                "MessageGroupId": aggregate_id,
                                "MessageDeduplicationId": str(row_id),
                            }
                            for i, (row_id, aggregate_id, payload) in enumerate(rows)
                        ],
                    )
                    conn.execute("DELETE FROM txoutbox.outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
            if rows:
                cycles.append((time.monotonic() - started, len(rows)))
            remaining = seconds - (time.monotonic() - started)
            if remaining <= 0:
                break
            time.sleep(min(FIXED_DELAY_SECONDS, remaining))
    return cycles


def main() -> None:
    database_url, queue_url, endpoint, seconds = sys.argv[1:5]
    cycles = run(database_url, queue_url, endpoint, float(seconds))
    print(json.dumps({"seconds": float(seconds), "cycles": cycles}), flush=True)


if __name__ == "__main__":
    main()
