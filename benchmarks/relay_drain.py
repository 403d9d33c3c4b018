"""Relay throughput: `txoutbox relay` processes draining a seeded backlog, timed from the outside."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from benchmarks.infra import (
    Child,
    RssSampler,
    Stack,
    TreeCpu,
    cpu_meter,
    postmaster_pid,
    seed_backlog,
    txoutbox,
)
from txoutbox.ops import outbox_count


@dataclass
class DrainResult:
    events: int
    seconds: float
    events_per_s: float
    peak_rss_mb: float
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    backlog: list[tuple[float, int]] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    queued: int | None = None


def drain(
    stack: Stack,
    logdir: Path,
    *,
    label: str,
    events: int = 100_000,
    processes: int = 1,
    null: bool = False,
    env_extra: dict[str, str] | None = None,
    timeout: float = 180.0,
    interval: float = 0.1,
    aggregates: int = 10_000,
) -> DrainResult:
    """Seed `events`, start `processes` relays, time from their start-up line until the outbox is empty.

    The clock starts when the last relay logs that it started (its imports and start-up are not the
    engine's throughput) and stops at the first poll that finds the outbox empty.
    """
    stack.truncate()
    seed_backlog(stack.database_url, events, aggregates)
    queues = None if null else stack.new_queues(label)
    env = stack.env(queues, **(env_extra or {}))
    args = txoutbox("relay", "--null-publisher") if null else txoutbox("relay")
    relays = [
        Child(args, env, logdir / f"{label}-relay{n}.log", ready_line="started:") for n in range(processes)
    ]
    try:
        for relay in relays:
            relay.wait_ready()
        sampler = RssSampler([r.pid for r in relays])
        assert stack.pg is not None
        assert stack.fauxqs is not None
        assert stack.fauxqs.pid is not None
        pg_cpu = TreeCpu(postmaster_pid(stack.pg.data_dir))
        fauxqs_cpu = TreeCpu(stack.fauxqs.pid)
        backlog: list[tuple[float, int]] = []
        with (
            psycopg.connect(stack.database_url, autocommit=True) as conn,
            cpu_meter([r.pid for r in relays]) as cpu,
        ):
            start = max(r.ready_at or time.monotonic() for r in relays)
            deadline = start + timeout
            while True:
                now = time.monotonic()
                left = outbox_count(conn)
                backlog.append((now - start, left))
                sampler.sample(now - start)
                if left == 0:
                    break
                if now > deadline:
                    raise RuntimeError(f"{label}: {left} events still in the outbox after {timeout} s")
                time.sleep(interval)
            seconds = time.monotonic() - start
            cpu_other = {"postgres": pg_cpu.used(), "fauxqs": fauxqs_cpu.used()}
        peak = sampler.peak_mb()
    finally:
        for relay in relays:
            relay.stop()
    queued = None
    if queues is not None:
        queued = stack.queue_depth(queues.queue_url)
        stack.delete_queues(queues)
    return DrainResult(
        events=events,
        seconds=seconds,
        events_per_s=events / seconds,
        peak_rss_mb=peak,
        rss=sampler.samples,
        backlog=backlog,
        cpu_seconds={**cpu, **cpu_other},
        queued=queued,
    )
