"""The fault ledger's consumer process: `python -m chaos.ledger_consumer` (set up like `txoutbox payments`).

The handler writes one `chaos.ledger` row per new event in the transaction the consumer opens for the batch
(the one that records the inbox ids), so a row exists exactly when the consumer's effect committed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import psycopg

from txoutbox import logs
from txoutbox.config import Settings
from txoutbox.consumer import Consumer, InboundEvent
from txoutbox.service import run_until_signalled

CONSUMER_NAME = "ledger"  # both consumer processes share one inbox: competing consumers of one queue

INSERT_LEDGER = """
INSERT INTO chaos.ledger (pid, event_id, aggregate_type, aggregate_id, seq)
SELECT %(pid)s, e, t, a, s
FROM unnest(CAST(%(ids)s AS uuid[]), CAST(%(types)s AS text[]), CAST(%(aggregates)s AS text[]),
            CAST(%(seqs)s AS int[])) AS x(e, t, a, s)
"""


def _seq(event: InboundEvent) -> int | None:
    data = event.data
    return int(data["seq"]) if isinstance(data, dict) and isinstance(data.get("seq"), int) else None


async def record(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
    """The ledger handler: one row per event, in the consumer's transaction."""
    await conn.execute(
        INSERT_LEDGER,
        {
            "pid": os.getpid(),
            "ids": [e.event_id for e in events],
            "types": [e.aggregate_type for e in events],
            "aggregates": [e.aggregate_id for e in events],
            "seqs": [_seq(e) for e in events],
        },
    )


def main() -> None:
    logs.configure()
    settings = Settings.from_env(need_sqs=True)
    run_until_signalled(Consumer(settings, CONSUMER_NAME, record, concurrency=4, wait_seconds=2).run)


if __name__ == "__main__":
    main()
