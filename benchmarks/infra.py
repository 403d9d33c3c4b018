"""The benchmark's stack: a fresh embedded PostgreSQL and fauxqs, queues per scenario, child processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devstack.postgres import LocalPostgres
from devstack.process import Child as ProcessChild
from devstack.process import children
from devstack.sqs import FauxqsProcess, Queues, ensure_queues, free_port, sqs_client
from txoutbox.config import DEFAULT_REGION
from txoutbox.migrate import apply_migrations, resolve_components

REGION = DEFAULT_REGION
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# The stored flight as the booking API writes it into the event (flights.models.flight_json), with airport
# names long enough to make the payload about 250 bytes, like a realistic booking.
DEPARTURE = "Paris Charles de Gaulle Airport (CDG), Terminal 2E, Roissy-en-France"
ARRIVAL = "London Heathrow Airport (LHR), Terminal 5, Hounslow"
DEPARTURE_AT = "2023-09-01T08:00:00Z"
ARRIVAL_AT = "2023-09-01T09:15:00Z"

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def socket_dir(database_url: str) -> str:
    """The unix-socket directory of a `postgresql://user:@/db?host=/dir` URL."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(database_url).query)
    return query["host"][0]


@dataclass
class Stack:
    """PostgreSQL + fauxqs for one benchmark run, both in a temporary folder, both stopped at the end."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="txo-bench-")))
    pg: LocalPostgres | None = None
    fauxqs: FauxqsProcess | None = None
    sqs: Any = None
    database_url: str = ""

    def start(self) -> Stack:
        self.pg = LocalPostgres(self.workdir / "pg").start()
        self.database_url = self.pg.url()
        apply_migrations(self.database_url, resolve_components(None))
        self.fauxqs = FauxqsProcess(free_port()).start()
        self.sqs = sqs_client(self.fauxqs.endpoint_url, REGION)
        return self

    def enable_commit_timestamps(self) -> None:
        """Record each transaction's commit time (track_commit_timestamp needs a restart: 0.3 s)."""
        assert self.pg is not None
        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW track_commit_timestamp").fetchone()
            if row and row[0] == "on":
                return
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        self.pg.stop()
        self.pg.start()
        assert self.pg.url() == self.database_url

    @property
    def endpoint_url(self) -> str:
        assert self.fauxqs is not None
        return self.fauxqs.endpoint_url

    @property
    def bin_path(self) -> Path:
        assert self.pg is not None
        return self.pg.bin_path()

    def database(self, name: str) -> str:
        """Another migrated database on the same server (used by the seed baseline)."""
        assert self.pg is not None
        url = self.pg.ensure_database(name)
        apply_migrations(url, resolve_components(None))
        return url

    def new_queues(self, label: str) -> Queues:
        suffix = uuid.uuid4().hex[:8]
        return ensure_queues(self.sqs, f"{label}-{suffix}.fifo", f"{label}-{suffix}-dlq.fifo")

    def delete_queues(self, queues: Queues) -> None:
        """Free fauxqs's memory (it keeps every message in memory)."""
        for url in (queues.queue_url, queues.dlq_url):
            with contextlib.suppress(Exception):
                self.sqs.delete_queue(QueueUrl=url)

    def queue_depth(self, queue_url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def env(
        self, queues: Queues | None = None, database_url: str | None = None, **extra: str
    ) -> dict[str, str]:
        """The environment of a `txoutbox` child process pointed at this stack."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url or self.database_url,
            SQS_ENDPOINT_URL=self.endpoint_url,
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            TXOUTBOX_HOME=str(self.workdir / "home"),
            PYTHONUNBUFFERED="1",
        )
        if queues is not None:
            env.update(SQS_QUEUE_URL=queues.queue_url, SQS_DLQ_URL=queues.dlq_url)
        env.update(extra)
        return env

    def truncate(self, database_url: str | None = None) -> None:
        with psycopg.connect(database_url or self.database_url, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE txoutbox.outbox, txoutbox.dead_letters, txoutbox.inbox, txoutbox.relays, "
                "public.flights, public.payments RESTART IDENTITY"
            )
            conn.execute("VACUUM ANALYZE txoutbox.outbox")

    def stop(self) -> None:
        if self.fauxqs is not None:
            self.fauxqs.stop()
        if self.pg is not None:
            self.pg.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- seeding --------------------------------------------------------------------------------------------

SEED_SQL = f"""
INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload, created_at)
SELECT gen_random_uuid(), 'Flight', (1 + (n - 1) %% %(aggregates)s)::text, 'FlightBooked',
       jsonb_build_object('id', 1 + (n - 1) %% %(aggregates)s, 'departureAirport', '{DEPARTURE}',
                          'arrivalAirport', '{ARRIVAL}', 'departureDateTime', '{DEPARTURE_AT}',
                          'arrivalDateTime', '{ARRIVAL_AT}', 'bookingSeq', n),
       now()
FROM generate_series(1, %(events)s) AS n
"""


def seed_backlog(database_url: str, events: int, aggregates: int = 10_000) -> float:
    """Bulk-insert a backlog (ids interleave the aggregates round-robin); return the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SEED_SQL, {"events": events, "aggregates": aggregates})
        conn.execute("VACUUM ANALYZE txoutbox.outbox")
    return time.perf_counter() - started


def payload_bytes(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT avg(octet_length(payload::text)) FROM txoutbox.outbox").fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


# -- child processes ------------------------------------------------------------------------------------


class Child(ProcessChild):
    """A `txoutbox ...` (or any) child process whose output goes to a file, with its start time.

    The process wrapper itself is the local stack's (devstack.process): one home for starting, reading and
    stopping children, which also die with the benchmark if it is killed.
    """

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, *, ready_line: str | None = None
    ):
        super().__init__(args, env, log_path=log_path, ready_line=ready_line, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        if not super().wait_ready(timeout):
            self.stop()
            raise RuntimeError(f"{' '.join(self.args)} did not get ready; see {self.log_path}")
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return super().stop(sig, timeout)

    def tail(self, lines: int = 5) -> str:
        assert self.log_path is not None
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def txoutbox(*args: str) -> list[str]:
    return [sys.executable, "-m", "txoutbox", *args]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class RssSampler:
    """Resident memory of some processes, sampled by the caller; the peak from the kernel (VmHWM)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, float]] = []  # (t, MB summed over pids)

    @staticmethod
    def _status(pid: int, key: str) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def sample(self, t: float) -> None:
        self.samples.append((t, max(self._status(pid, "VmRSS") for pid in self.pids)))

    def peak_mb(self) -> float:
        return max(self._status(pid, "VmHWM") for pid in self.pids)


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class TreeCpu:
    """CPU seconds used by a process and its children (also children that come and go) over a period."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = self._read()

    @staticmethod
    def _stat(pid: int) -> tuple[float, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime: the c* fields hold the CPU of children that have exited
            return (int(f[11]) + int(f[12])) / ticks, (int(f[13]) + int(f[14])) / ticks
        return 0.0, 0.0

    def _read(self) -> dict[int, float]:
        own, dead_children = self._stat(self.pid)
        values = {self.pid: own, -1: dead_children}
        for child in children(self.pid):
            values[child] = sum(self._stat(child))
        return values

    def used(self) -> float:
        now = self._read()
        return sum(v - self._start.get(k, 0.0) for k, v in now.items())


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far; 0 once it is gone."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@contextlib.contextmanager
def cpu_meter(pids: list[int]) -> Iterator[dict[str, float]]:
    """CPU seconds (user + system) used by `pids` during the block: {pid: seconds} plus 'total'."""
    cpu = proc_cpu
    before = {pid: cpu(pid) for pid in pids}
    out: dict[str, float] = {}
    yield out
    total = 0.0
    for pid in pids:
        used = cpu(pid) - before[pid]
        out[str(pid)] = used
        total += used
    out["total"] = total
