"""`python -m chaos` (`make chaos`): run the fault ledger; print the table and write the results as JSON.

CHAOS_SECONDS (default 300): length of the fault phase. CHAOS_SEED (default: random, printed): the schedule.
CHAOS_OUTPUT (default chaos/results/latest.json): where the JSON goes. Exit status 1 if the ledger is not
clean (anything lost, handled twice, out of order, stuck, or dead-lettered that should not be).

Phases: start the stack and the processes; load (booking API + library writers); faults for CHAOS_SECONDS;
a calm stretch under load (how fast the system is once the faults stop); load off; settle until every
committed event is handled or dead-lettered (bounded); read the ledger.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from chaos.faults import Injector, schedule
from chaos.ledger import judge, settled
from chaos.stack import ROOT, Child, Stack, python_module, txoutbox, wait_for

WARM_UP_SECONDS = 2.0
BOOKING = {
    "departureAirport": "Paris",
    "arrivalAirport": "London",
    "departureDateTime": "2023-09-01T08:00:00.000Z",
    "arrivalDateTime": "2023-09-01T08:15:00.000Z",
}


class Profile:
    """Sizes of a run: the long run (make chaos) or the short one (make test, under ~90 s on 2 busy cores)."""

    def __init__(self, seconds: float) -> None:
        short = seconds < 120
        self.seconds = seconds
        self.short = short
        self.mean_gap = 1.4 if short else 2.2  # seconds between fault starts: >= 100 faults in 300 s
        self.lease = "5" if short else "10"
        self.visibility = 6 if short else 10
        self.stuck_after = 30.0 if short else 60.0
        self.calm = 4.0 if short else 15.0
        self.settle = 45.0 if short else 150.0
        self.writer_tps = 4.0 if short else 8.0
        # A 1,000-event aggregate drains one message at a time (one in flight per FIFO group): 20-60 s.
        self.burst_every = 1_000.0 if short else 40.0  # short: one burst per writer, 3 s in
        self.burst_events = 100 if short else 1_000
        self.no_burst_tail = 0.0 if short else 60.0  # see chaos.writer
        self.booking_rate = 8.0 if short else 20.0  # per load thread, two threads


class BookingLoad:
    """Two threads posting bookings to the API at a steady rate; failures (API killed or stopped) are fine:
    only committed bookings count."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.stop = threading.Event()
        self.ok = 0
        self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.url}/api/flights", json=BOOKING)
                    if response.status_code == 201:
                        self.ok += 1
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1
                next_at = max(next_at + 1.0 / self.rate, time.monotonic() - 1.0)
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _log_has(child: Child, text: str) -> bool:
    path = Path(child.log.name)
    return path.exists() and text in path.read_text(errors="replace")


def _api_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def run(profile: Profile, seed: int, output: Path) -> int:
    started = time.time()
    stack = Stack()
    try:
        stack.start(visibility_timeout=profile.visibility)
    except BaseException:
        stack.stop()
        raise
    relay_env = {
        "TXOUTBOX_LEASE_SECONDS": profile.lease,
        "TXOUTBOX_POLL_INTERVAL": "0.5",
        "TXOUTBOX_PROBE_BASE_SECONDS": "0.5",
        "TXOUTBOX_PROBE_CAP_SECONDS": "2",
        "TXOUTBOX_RETRY_BASE_SECONDS": "0.2",
        "TXOUTBOX_RETRY_CAP_SECONDS": "5",
        "TXOUTBOX_HEARTBEAT_SECONDS": "2",
        "TXOUTBOX_SHUTDOWN_TIMEOUT": "5",
    }

    def relay(name: str, extra: dict[str, str]) -> Child:
        return stack.child(name, txoutbox("relay"), **{**relay_env, **extra})

    relays = [relay(f"relay-{n}", {}).start() for n in range(3)]
    consumers = [
        stack.child(f"consumer-{n}", python_module("chaos.ledger_consumer")).start() for n in range(2)
    ]
    api_url = f"http://127.0.0.1:{stack.api_port}"
    api = stack.child("api", txoutbox("api", "--port", str(stack.api_port))).start()
    writers = [
        stack.child(
            f"writer-{n}",
            python_module("chaos.writer"),
            CHAOS_WRITER_ID=str(n),
            CHAOS_SEED=str(seed),
            CHAOS_WRITER_TPS=str(profile.writer_tps),
            CHAOS_BURST_EVERY=str(profile.burst_every),
            CHAOS_BURST_EVENTS=str(profile.burst_events),
            CHAOS_BURST_FOR=str(WARM_UP_SECONDS + profile.seconds - profile.no_burst_tail),
        )
        for n in range(2)
    ]
    load = BookingLoad(api_url, profile.booking_rate)
    children = [*relays, *consumers, api, *writers]
    keep = False
    try:
        ready = wait_for(
            lambda: (
                all(_log_has(r, "started") for r in relays)
                and all(_log_has(c, "consumer started") for c in consumers)
                and _api_up(api_url)
            ),
            60,
            0.2,
        )
        if not ready:
            raise SystemExit(f"the system did not start; logs in {stack.workdir / 'logs'}")
        for w in writers:
            w.start()
        load.start()
        time.sleep(WARM_UP_SECONDS)  # load running before the first fault (not a wait for a result)

        plan = schedule(seed, profile.seconds, profile.mean_gap)
        injector = Injector(stack, relays, consumers, api, relay)
        print(f"chaos: seed {seed}, {len(plan)} faults over {profile.seconds:.0f} s", flush=True)
        faults_started = time.time()
        phases = {"start": round(faults_started - started, 1)}
        injector.run(plan, profile.seconds, tick=lambda: None)
        injector.restore()
        last_fault_end = injector.last_fault_end
        phases["faults"] = round(time.time() - faults_started, 1)
        time.sleep(profile.calm)  # calm under load: the "after faults" latency
        load.finish()
        for w in writers:
            w.terminate()
        settle_from = time.time()
        wait_for(lambda: settled(stack.database_url)[0] == 0, profile.settle, 0.5)
        phases["settle"] = round(time.time() - settle_from, 1)
        verdict = judge(
            stack.database_url,
            faults_started=faults_started,
            last_fault_end=last_fault_end,
            stuck_after=profile.stuck_after,
            sqs_dlq_messages=stack.dlq_depth(),
        )
        result: dict[str, Any] = {
            "seed": seed,
            "fault_seconds": profile.seconds,
            "committed": verdict.committed,
            "lost": verdict.lost,
            "handled_twice": verdict.handled_twice,
            "order_violations": verdict.order_violations,
            "stuck": verdict.stuck,
            "stuck_after_seconds": profile.stuck_after,
            "dead_letters": verdict.dead_letters,
            "dead_letters_expected_oversized": verdict.dead_letters_expected,
            "unexpected_dead_letters": verdict.unexpected_dead_letters,
            "sqs_dlq_messages": verdict.sqs_dlq_messages,
            "faults": dict(sorted(injector.faults.items())),
            "faults_total": sum(injector.faults.values()),
            "max_commit_to_handled_ms": {
                "during_faults": round(verdict.max_ms_during_faults, 1),
                "after_faults": round(verdict.max_ms_after_faults, 1),
            },
            "bookings": {"accepted": load.ok, "failed_or_refused": load.failed},
            "clean": verdict.clean,
            "examples": {**verdict.examples, "lost_by_aggregate_type": verdict.lost_by_type},
            "slowest_during_faults": verdict.slowest,
            "phases_seconds": phases,
            "run_seconds": round(time.time() - started, 1),
        }
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        _print_table(result, output)
        keep = not verdict.clean
        if keep:
            print(f"logs kept in {stack.workdir / 'logs'}", flush=True)
        return 0 if verdict.clean else 1
    finally:
        load.finish()
        for child in children:
            child.terminate(5)
        stack.stop(keep=keep)


def _print_table(result: dict[str, Any], output: Path) -> None:
    latency = result["max_commit_to_handled_ms"]
    rows = [
        ("committed", result["committed"]),
        ("lost", result["lost"]),
        ("handled twice", result["handled_twice"]),
        ("order violations", result["order_violations"]),
        (f"stuck ({result['stuck_after_seconds']:.0f} s after the last fault)", result["stuck"]),
        (
            "dead letters (oversized)",
            f"{result['dead_letters']} ({result['dead_letters_expected_oversized']})",
        ),
        ("unexpected dead letters", result["unexpected_dead_letters"]),
        ("messages in the SQS DLQ", result["sqs_dlq_messages"]),
        ("faults", result["faults_total"]),
        *((f"  {kind}", n) for kind, n in result["faults"].items()),
        ("max commit -> handled, during faults", f"{latency['during_faults']:,.0f} ms"),
        ("max commit -> handled, after faults", f"{latency['after_faults']:,.0f} ms"),
        ("seed", result["seed"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"{'CLEAN' if result['clean'] else 'NOT CLEAN'}: {output}", flush=True)
    if not result["clean"]:
        print(json.dumps(result["examples"], indent=2))


def main() -> None:
    seconds = float(os.environ.get("CHAOS_SECONDS") or 300)
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    output = Path(os.environ.get("CHAOS_OUTPUT") or ROOT / "chaos" / "results" / "latest.json")
    sys.exit(run(Profile(seconds), seed, output))


if __name__ == "__main__":
    main()
