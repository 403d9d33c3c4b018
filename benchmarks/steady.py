"""The steady-load run: pgbench booking at a fixed rate, one relay, and either the SQS observer or the
payment service.

Two passes at the same load, because a FIFO queue has one consumer: pass "sqs" reads the queue with the
observer once the load is over and the outbox empty (SentTimestamp per message: commit -> SQS accepted;
read during the run, the queue cost a third of a core the relay needs), pass "payments" with
`txoutbox payments` (commit -> payment row). Each pass books for WARMUP seconds first (processes settle:
connections, prepared statements, the first claims), then SECONDS measured; both sample the outbox
backlog every 0.1 s. Every booking committed is matched to its arrival; one that never arrived is counted
as missing.
"""

from __future__ import annotations

import subprocess
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
    schedule_lag_avg_ms: float = 0.0  # pgbench: how late bookings started against the rate
    schedule_lag_max_ms: float = 0.0
    missing: int = 0
    relay_cpu_share: float = 0.0
    writer_cpu_share: float = 0.0  # the load generator's, of one core

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
    run: int = 0,
    relay_env: dict[str, str] | None = None,
) -> SteadyResult:
    stack.truncate()
    queues = stack.new_queues(f"e2e-{consumer}")
    env = stack.env(queues)
    sent_csv = logdir / f"e2e-{consumer}-{run}-sent.csv"
    sent_csv.unlink(missing_ok=True)  # an earlier pass's file must not stand in for this one's
    relay = Child(
        txoutbox("relay"),
        {**env, **(relay_env or {})},
        logdir / f"e2e-{consumer}-{run}-relay.log",
        ready_line="started:",
    )
    observer_args = python_module(
        "benchmarks.e2e", "observer", queues.queue_url, stack.endpoint_url, "600", str(sent_csv)
    )
    downstream: Child | None = None
    if consumer == "payments":
        # The payment service logs one line per event (the seed's behaviour): to a file, as in production.
        downstream = Child(
            txoutbox("payments"), env, logdir / "e2e-payments.log", ready_line="consumer started"
        )
    backlog: list[tuple[float, int]] = []
    writer: subprocess.Popen[str] | None = None
    writer_out = ""
    writer_cpu = 0.0
    try:
        relay.wait_ready()
        if downstream is not None:
            downstream.wait_ready()
        time.sleep(0.5)  # the relay's listener connects
        writer = subprocess.Popen(
            e2e.writer_command(stack.bin_path, stack.database_url, rate, warmup + seconds, logdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        start = time.monotonic()
        relay_share = 0.0
        measured_from: tuple[float, float, float] | None = None  # (monotonic, relay CPU s, writer CPU s)
        writer_done_at: tuple[float, float] | None = None  # (monotonic, CPU s) while the load ran
        relay_done_at: tuple[float, float] | None = None
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            deadline = start + warmup + seconds + 300
            while time.monotonic() < deadline:
                if relay.proc.poll() is not None:
                    raise RuntimeError(f"the relay exited ({relay.proc.returncode}): {relay.tail()}")
                now = time.monotonic()
                backlog.append((now - start - warmup, outbox_count(conn)))
                if measured_from is None and now - start >= warmup:
                    measured_from = (now, proc_cpu(relay.pid), proc_cpu(writer.pid))
                if writer.poll() is None:
                    # read before it exits (a zombie's /proc has no CPU times)
                    writer_done_at = (now, proc_cpu(writer.pid))
                    relay_done_at = (now, proc_cpu(relay.pid))
                else:
                    # Done when every booking arrived: paid, or out of the outbox and out of the queue.
                    if consumer == "payments":
                        row = conn.execute(
                            "SELECT (SELECT count(*) FROM public.payments) "
                            ">= (SELECT count(*) FROM public.flights)"
                        ).fetchone()
                        if row and row[0]:
                            break
                    elif outbox_count(conn) == 0 and downstream is None:
                        # SentTimestamp is set when SQS accepts a message, so the queue is read only now:
                        # an observer receiving during the run took a third of a core from the relay.
                        downstream = Child(
                            observer_args, env, logdir / "e2e-observer.log", ready_line="observing"
                        )
                        downstream.wait_ready()
                    elif downstream is not None and stack.queue_depth(queues.queue_url) == 0:
                        break
                time.sleep(0.1)
        if measured_from is not None and writer_done_at is not None and relay_done_at is not None:
            relay_share = (relay_done_at[1] - measured_from[1]) / max(
                relay_done_at[0] - measured_from[0], 1e-9
            )
            if writer_done_at is not None:
                writer_cpu = (writer_done_at[1] - measured_from[2]) / max(
                    writer_done_at[0] - measured_from[0], 1e-9
                )
        writer_out = writer.communicate(timeout=30)[0]
        if writer.returncode != 0:
            raise RuntimeError(f"pgbench failed ({writer.returncode}): {writer_out[-2000:]}")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        if downstream is not None:
            downstream.stop()
        relay.stop()
        stack.delete_queues(queues)
    commits = sorted(e2e.read_commits(stack.database_url).items(), key=lambda c: c[1])
    arrived = e2e.read_sent(sent_csv) if consumer != "payments" else e2e.read_payments(stack.database_url)
    first = commits[0][1] + warmup if commits else 0.0  # the first measured commit time, at the latest
    measured = [(f, at) for f, at in commits if at >= first]
    if measured:
        first = measured[0][1]
    result = SteadyResult(consumer, len(measured), 0.0, 0.0, [], [], backlog=backlog)
    for flight_id, commit in commits:
        at = arrived.get(flight_id)
        if at is None:
            result.missing += 1
            continue
        if commit < first:
            result.warmup_offsets.append(commit - first)
            result.warmup_latencies_ms.append((at - commit) * 1000.0)
        else:
            result.commit_offsets.append(commit - first)
            result.latencies_ms.append((at - commit) * 1000.0)
    result.seconds = measured[-1][1] - first if measured else float(seconds)
    result.achieved_rate = len(measured) / result.seconds if result.seconds else 0.0
    result.schedule_lag_avg_ms, result.schedule_lag_max_ms = e2e.schedule_lag_ms(writer_out)
    result.relay_cpu_share = relay_share
    result.writer_cpu_share = writer_cpu
    return result
