"""A library writer process for the fault ledger: `python -m chaos.writer` (DATABASE_URL, CHAOS_WRITER_ID,
CHAOS_SEED, CHAOS_WRITER_TPS, CHAOS_BURST_EVERY, CHAOS_BURST_EVENTS, CHAOS_BURST_FOR). SIGTERM stops it.

Each transaction writes events through `txoutbox.add_events` and, in the same transaction, one
`chaos.expected` row per event: what the ledger must find handled (an oversized payload: dead-lettered).
Aggregates get several events per transaction and more in later transactions. Every CHAOS_BURST_EVERY
seconds (the first 3 s in) a transaction is a burst of CHAOS_BURST_EVENTS (1,000) events of one aggregate;
every 25th writes payloads near SQS's 256 KiB limit; every 60th one over it, as a single-event aggregate
(a dead letter holds back the later events of its aggregate, by design). No burst after CHAOS_BURST_FOR
seconds from the start: one aggregate drains one message at a time (one in flight per FIFO group), so a
burst written in the last minute of faults could not be through 60 s after them even without a fault.
After any database error the writer reconnects and starts new aggregates (a lost COMMIT answer leaves it
unsure which sequence numbers were stored; the database, not the writer, is the ledger's truth).
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import psycopg

from txoutbox import Event, add_events

NEAR_LIMIT_BYTES = 250_000  # payload; the envelope adds a few hundred bytes: still under 262,144
OVER_LIMIT_BYTES = 300_000

INSERT_EXPECTED = """
INSERT INTO chaos.expected (event_id, aggregate_type, aggregate_id, seq, oversized, writer)
SELECT * FROM unnest(CAST(%(ids)s AS uuid[]), CAST(%(types)s AS text[]), CAST(%(aggregates)s AS text[]),
                     CAST(%(seqs)s AS int[]), CAST(%(oversized)s AS bool[]), CAST(%(writers)s AS int[]))
"""


class Writer:
    def __init__(
        self,
        database_url: str,
        writer_id: int,
        seed: int,
        tps: float,
        burst_every: float,
        burst_events: int,
        burst_for: float,
    ) -> None:
        self.database_url = database_url
        self.writer_id = writer_id
        self.rng = random.Random(seed * 1_000 + writer_id)  # noqa: S311 - repeatable, not a secret
        self.interval = 1.0 / tps
        self.open: dict[str, int] = {}  # aggregate id -> next seq
        self.made = 0
        self.transactions = 0
        self.stopping = False
        self.burst_every = burst_every
        self.burst_events = burst_events
        self.burst_until = time.monotonic() + burst_for
        self.next_burst = time.monotonic() + 3.0

    def _aggregate(self) -> str:
        self.made += 1
        return f"w{self.writer_id}-{self.made}"

    def plan(self) -> tuple[str, str, int, int, bool]:
        """(aggregate type, aggregate id, events, payload bytes, oversized) of the next transaction."""
        n = self.transactions
        if n % 60 == 59:
            return "Big", self._aggregate(), 1, OVER_LIMIT_BYTES, True
        if self.next_burst <= time.monotonic() < self.burst_until:
            self.next_burst += self.burst_every
            return "Burst", self._aggregate(), self.burst_events, 64, False
        if n % 25 == 24:
            return "Large", self._aggregate(), self.rng.randint(1, 2), NEAR_LIMIT_BYTES, False
        if self.open and self.rng.random() < 0.5:
            aggregate = self.rng.choice(sorted(self.open))
            return "Order", aggregate, self.rng.randint(1, 5), self.rng.randint(16, 2_000), False
        aggregate = self._aggregate()
        if self.rng.random() < 0.5:
            self.open[aggregate] = 0
            if len(self.open) > 50:
                del self.open[self.rng.choice(sorted(self.open))]
        return "Order", aggregate, self.rng.randint(1, 8), self.rng.randint(16, 2_000), False

    def write(self, conn: psycopg.Connection[Any]) -> None:
        kind, aggregate, count, size, oversized = self.plan()
        first = self.open.get(aggregate, 0)
        pad = "x" * size
        events = [
            Event(kind, aggregate, f"{kind}Changed", {"seq": first + i, "pad": pad}) for i in range(count)
        ]
        with conn.transaction():
            add_events(conn, events)
            conn.execute(
                INSERT_EXPECTED,
                {
                    "ids": [e.event_id for e in events],
                    "types": [kind] * count,
                    "aggregates": [aggregate] * count,
                    "seqs": [first + i for i in range(count)],
                    "oversized": [oversized] * count,
                    "writers": [self.writer_id] * count,
                },
            )
        if aggregate in self.open:
            self.open[aggregate] = first + count
        self.transactions += 1

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        next_at = time.monotonic()
        while not self.stopping:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=3)
                self.write(conn)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                self.open.clear()
                time.sleep(0.2)
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(
                next_at, time.monotonic() - 1.0
            )  # behind after an outage: do not catch up in a rush
        if conn is not None:
            conn.close()


def main() -> None:
    writer = Writer(
        os.environ["DATABASE_URL"],
        int(os.environ["CHAOS_WRITER_ID"]),
        int(os.environ["CHAOS_SEED"]),
        float(os.environ.get("CHAOS_WRITER_TPS", "10")),
        float(os.environ.get("CHAOS_BURST_EVERY", "30")),
        int(os.environ.get("CHAOS_BURST_EVENTS", "1000")),
        float(os.environ.get("CHAOS_BURST_FOR", "inf")),
    )

    def stop(signum: int, frame: Any) -> None:
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    writer.run()
    print(f"writer {writer.writer_id}: {writer.transactions} transactions", flush=True)


if __name__ == "__main__":
    main()
