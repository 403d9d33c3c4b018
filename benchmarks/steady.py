"""The steady-load run: a paced writer, one relay, and either the SQS observer or the payment service.

Two passes at the same load, because a FIFO queue has one consumer: pass "sqs" drains the queue with the
observer (SentTimestamp per message: commit -> SQS accepted), pass "payments" with `txoutbox payments`
(commit -> payment row). Each pass books for WARMUP seconds first (processes settle: connections,
prepared statements, the first claims), then SECONDS measured; both sample the outbox backlog every 0.1 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from benchmarks import e2e
from benchmarks.infra import Child, Stack, percentile, proc_cpu, python_module, txoutbox
from txoutbox.ops import outbox_count

WARMUP_SECONDS = 3


@dataclass
class SteadyResult:
    consumer: str
    bookings: int  # measured (after the warm-up)
    seconds: float
    achieved_rate: float
    latencies_ms: list[float]  # measured bookings, in commit order
    commit_offsets: list[float]  # seconds since the first measured commit, same order
    warmup_offsets: list[float] = field(default_factory=list)  # warm-up bookings (plotted, not counted)
    warmup_latencies_ms: list[float] = field(default_factory=list)
    backlog: list[tuple[float, int]] = field(default_factory=list)  # seconds since the first measured commit
    schedule_lag_p99_ms: float = 0.0
    missing: int = 0
    relay_cpu_share: float = 0.0
    client_commit_delay_p50_ms: float = 0.0  # writer's clock after COMMIT returned - server commit time
    client_commit_delay_p99_ms: float = 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def window_percentiles(self, q: float, windows: int = 3) -> list[float]:
        """Percentile `q` in each of `windows` equal slices of the measured run (by commit time)."""
        if not self.commit_offsets:
            return []
        span = max(self.commit_offsets) + 1e-9
        slices: list[list[float]] = [[] for _ in range(windows)]
        for offset, value in zip(self.commit_offsets, self.latencies_ms, strict=True):
            slices[min(int(offset / span * windows), windows - 1)].append(value)
        return [percentile(s, q) for s in slices]


def steady(
    stack: Stack,
    logdir: Path,
    *,
    consumer: str,
    rate: int = 1000,
    seconds: int = 30,
    warmup: int = WARMUP_SECONDS,
    writers: int = 2,
    run: int = 0,
) -> SteadyResult:
    stack.truncate()
    queues = stack.new_queues(f"e2e-{consumer}")
    env = stack.env(queues)
    total = rate * (seconds + warmup)
    commits_csvs = [logdir / f"e2e-{consumer}-{run}-commits-{n}.csv" for n in range(writers)]
    sent_csv = logdir / f"e2e-{consumer}-{run}-sent.csv"
    relay = Child(txoutbox("relay"), env, logdir / f"e2e-{consumer}-{run}-relay.log", ready_line="started:")
    if consumer == "payments":
        # The payment service logs one line per event (the seed's behaviour): to a file, as in production.
        downstream = Child(
            txoutbox("payments"), env, logdir / "e2e-payments.log", ready_line="consumer started"
        )
    else:
        downstream = Child(
            python_module(
                "benchmarks.e2e",
                "observer",
                queues.queue_url,
                stack.endpoint_url,
                str(total),
                str(seconds + warmup + 60),
                str(sent_csv),
            ),
            env,
            logdir / "e2e-observer.log",
            ready_line="observing",
        )
    procs: list[Child] = []
    backlog: list[tuple[float, int]] = []
    try:
        relay.wait_ready()
        downstream.wait_ready()
        time.sleep(0.5)  # the relay's listener connects
        # Several writer processes (each paced at its share of the rate, 4 connections each): one Python
        # process cannot book much more than 2,000/s through psycopg on a busy core.
        for n, path in enumerate(commits_csvs):
            procs.append(
                Child(
                    python_module(
                        "benchmarks.e2e",
                        "writer",
                        stack.database_url,
                        str(rate / writers),
                        str(seconds),
                        str(warmup),
                        str(path),
                    ),
                    env,
                    logdir / f"e2e-{consumer}-writer{n}.log",
                    ready_line="writing",
                )
            )
        for writer in procs:
            writer.wait_ready()
        start = time.monotonic()
        relay_share = 0.0
        measured_from: tuple[float, float] | None = None  # (monotonic time, relay CPU seconds)
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            deadline = start + warmup + seconds + 60
            while time.monotonic() < deadline:
                now = time.monotonic()
                backlog.append((now - start - warmup, outbox_count(conn)))
                if measured_from is None and now - start >= warmup:
                    measured_from = (now, proc_cpu(relay.pid))
                if all(w.proc.poll() is not None for w in procs):
                    if consumer == "payments":
                        row = conn.execute("SELECT count(*) FROM public.payments").fetchone()
                        if row and row[0] >= total:
                            break
                    elif downstream.proc.poll() is not None:
                        break
                time.sleep(0.1)
        if measured_from is not None:
            relay_share = (proc_cpu(relay.pid) - measured_from[1]) / max(
                time.monotonic() - measured_from[0], 1e-9
            )
    finally:
        for writer in procs:
            writer.stop()
        downstream.stop()
        relay.stop()
        stack.delete_queues(queues)
    bookings = [b for path in commits_csvs for b in e2e.read_bookings(path, stack.database_url)]
    arrived = e2e.read_sent(sent_csv) if consumer != "payments" else e2e.read_payments(stack.database_url)
    bookings.sort(key=lambda b: b.commit)
    measured = [b for b in bookings if not b.warmup]
    first = measured[0].commit if measured else bookings[0].commit
    result = SteadyResult(consumer, len(measured), 0.0, 0.0, [], [], backlog=backlog)
    for b in bookings:
        at = arrived.get(b.event_id)
        if at is None:
            result.missing += 1
            continue
        if b.warmup:
            result.warmup_offsets.append(b.commit - first)
            result.warmup_latencies_ms.append((at - b.commit) * 1000.0)
        else:
            result.commit_offsets.append(b.commit - first)
            result.latencies_ms.append((at - b.commit) * 1000.0)
    result.seconds = max(result.commit_offsets) if result.commit_offsets else float(seconds)
    result.achieved_rate = len(measured) / result.seconds if result.seconds else 0.0
    result.schedule_lag_p99_ms = percentile([b.schedule_lag * 1000 for b in measured], 99)
    result.relay_cpu_share = relay_share
    delays = [(b.client_commit - b.commit) * 1000 for b in measured]
    result.client_commit_delay_p50_ms = percentile(delays, 50)
    result.client_commit_delay_p99_ms = percentile(delays, 99)
    return result
