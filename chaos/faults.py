"""The seeded fault schedule and its execution against the running system.

Every fault has a start and an end (the end of a SIGKILL is the restart of the killed process). The
schedule is a pure function of the seed and the length of the fault phase, so a run can be repeated.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.stack import Child, Stack

# kind -> weight in the random draw. A PostgreSQL restart is placed, not drawn (once per 150 s of faults).
WEIGHTS = {
    "relay_sigkill": 3,
    "relay_sigstop": 2,
    "consumer_sigkill": 2,
    "consumer_sigstop": 2,
    "api_sigkill": 1,
    "api_sigstop": 1,
    "sqs_deny": 1,
    "sqs_down": 1,
    "xmin_pin": 1,
    "short_lease_relay": 1,
}
DURATIONS = {  # seconds the fault lasts (a killed process is restarted after this)
    "relay_sigkill": (0.3, 2.0),
    "relay_sigstop": (1.0, 6.0),
    "consumer_sigkill": (0.3, 2.0),
    "consumer_sigstop": (1.0, 6.0),
    "api_sigkill": (0.3, 1.5),
    "api_sigstop": (0.5, 3.0),
    "sqs_deny": (1.0, 5.0),
    "sqs_down": (1.0, 5.0),
    "xmin_pin": (5.0, 15.0),
    "short_lease_relay": (4.0, 10.0),
    "postgres_restart": (0.0, 0.0),
}
SHORT_LEASE_SECONDS = "0.3"  # far shorter than one publish round of a claim


@dataclass(frozen=True, order=True)
class Fault:
    at: float  # seconds into the fault phase
    kind: str
    target: int  # which relay / consumer (modulo how many run)
    duration: float


def schedule(seed: int, seconds: float, mean_gap: float) -> list[Fault]:
    """The faults of a run: random kinds at random gaps (mean `mean_gap`), all over by `seconds`."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable schedule, not a secret
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    faults: list[Fault] = []
    t = 1.0
    while t < seconds - 1.0:
        kind = rng.choices(kinds, weights)[0]
        low, high = DURATIONS[kind]
        duration = min(rng.uniform(low, high), seconds - t)
        faults.append(Fault(round(t, 2), kind, rng.randrange(1_000), round(duration, 2)))
        t += rng.uniform(0.2, 2 * mean_gap - 0.2)
    restarts = max(1, round(seconds / 150))
    for i in range(restarts):
        faults.append(Fault(round(seconds * (i + 1) / (restarts + 1), 2), "postgres_restart", 0, 0.0))
    return sorted(faults)


@dataclass
class Injector:
    """Applies a schedule to the stack's processes; `faults` counts what actually took effect."""

    stack: Stack
    relays: list[Child]
    consumers: list[Child]
    api: Child
    relay_factory: Callable[[str, dict[str, str]], Child]
    faults: Counter[str] = field(default_factory=Counter)
    last_fault_end: float = 0.0  # wall clock
    _ends: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _n: int = 0
    _sqs_until: float = 0.0
    _extra: list[Child] = field(default_factory=list)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._ends, (time.monotonic() + delay, self._n, action))
        self.last_fault_end = max(self.last_fault_end, time.time() + delay)

    def run(self, plan: list[Fault], seconds: float, tick: Callable[[], None]) -> None:
        """Inject the plan over `seconds`, then end every fault still in force."""
        start = time.monotonic()
        pending = list(plan)
        while pending or self._ends:
            now = time.monotonic()
            while pending and start + pending[0].at <= now:
                self.inject(pending.pop(0))
            while self._ends and self._ends[0][0] <= now:
                heapq.heappop(self._ends)[2]()
            tick()
            time.sleep(0.02)
        self.last_fault_end = max(self.last_fault_end, time.time()) if self.faults else time.time()
        for child in self._extra:
            child.terminate()

    def inject(self, fault: Fault) -> None:
        kind = fault.kind
        self.stack.note(f"{fault.at:7.2f} {kind} target={fault.target} for {fault.duration:.2f} s")
        group = {"relay": self.relays, "consumer": self.consumers, "api": [self.api]}.get(kind.split("_")[0])
        if group is not None and kind.endswith(("sigkill", "sigstop")):
            child = group[fault.target % len(group)]
            if kind.endswith("sigkill"):
                if not child.kill():
                    return
                self._later(fault.duration, child.start)
            else:
                if child.stopped or not child.signal(signal.SIGSTOP):
                    return
                self._later(fault.duration, lambda c=child: c.signal(signal.SIGCONT))  # type: ignore[misc]
        elif kind in ("sqs_deny", "sqs_down"):
            self.stack.set_sqs(kind.removeprefix("sqs_"))
            self._sqs_until = max(self._sqs_until, time.monotonic() + fault.duration)
            self._later(fault.duration, self._sqs_window_over)
        elif kind == "xmin_pin":
            self._pin(fault.duration)
        elif kind == "short_lease_relay":
            child = self.relay_factory(
                f"relay-short-{fault.at}", {"TXOUTBOX_LEASE_SECONDS": SHORT_LEASE_SECONDS}
            )
            self._extra.append(child.start())
            self._later(fault.duration, lambda c=child: c.signal(signal.SIGTERM))  # type: ignore[misc]
        elif kind == "postgres_restart":
            self.stack.restart_postgres()
        self.faults[kind] += 1
        if kind in ("postgres_restart",):
            self.last_fault_end = max(self.last_fault_end, time.time())

    def _sqs_window_over(self) -> None:
        if time.monotonic() >= self._sqs_until - 0.01:
            self.stack.set_sqs("allow")

    def _pin(self, seconds: float) -> None:
        """A session holding a snapshot (REPEATABLE READ, idle in transaction): vacuum cannot remove the
        rows deleted after it, so every claim walks their index entries until it ends."""
        try:
            conn: psycopg.Connection[Any] = psycopg.connect(self.stack.database_url, connect_timeout=3)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT count(*) FROM txoutbox.outbox")
        except psycopg.Error:
            return

        def release() -> None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

        self._later(seconds, release)

    def restore(self) -> None:
        """Everything back to normal (the schedule's ends do it; this is the safety net)."""
        self.stack.set_sqs("allow")
        for child in [*self.relays, *self.consumers, self.api]:
            if child.stopped:
                child.signal(signal.SIGCONT)
            if not child.alive:
                child.start()
