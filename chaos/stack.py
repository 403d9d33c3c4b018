"""The embedded stack for the fault ledger, and its child processes (started, killed, stopped, restarted)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

from devstack.postgres import LocalPostgres
from devstack.sqs import FauxqsProcess, Queues, ensure_queues, free_port, set_fault, sqs_client
from txoutbox.migrate import apply_migrations, resolve_components

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

LEDGER_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS chaos;
-- What the writers committed, written in the same transaction as the events themselves.
CREATE TABLE IF NOT EXISTS chaos.expected (
    event_id       uuid    PRIMARY KEY,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    seq            integer NOT NULL,
    oversized      boolean NOT NULL,
    writer         integer NOT NULL
);
-- What the consumers handled: one row per handled event, written in the handler's transaction. No unique
-- key on purpose: an event handled twice shows as two rows.
CREATE TABLE IF NOT EXISTS chaos.ledger (
    n              bigserial PRIMARY KEY,
    pid            integer NOT NULL,
    event_id       uuid    NOT NULL,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    seq            integer
);
CREATE INDEX IF NOT EXISTS ledger_event_idx ON chaos.ledger (event_id);
CREATE INDEX IF NOT EXISTS ledger_aggregate_idx ON chaos.ledger (aggregate_type, aggregate_id);
"""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One child process of a role (relay, consumer, api, writer); restartable with the same command."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: IO[str]
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped and not yet continued
    starts: int = 0

    def start(self) -> Child:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.stopped = False
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> bool:
        if not self.alive:
            return False
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped = True
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.stopped = False
        return True

    def kill(self) -> bool:
        if not self.signal(signal.SIGKILL):
            return False
        assert self.proc is not None
        self.proc.wait(10)
        return True

    def terminate(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Stack:
    """PostgreSQL (commit timestamps on), fauxqs with its fault switch, the FIFO queues, the ledger tables."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="txo-chaos-")))
    pg: LocalPostgres | None = None
    fauxqs: FauxqsProcess | None = None
    queues: Queues | None = None
    sqs: Any = None
    database_url: str = ""
    api_port: int = 0

    def start(self, visibility_timeout: int) -> Stack:
        self.pg = LocalPostgres(self.workdir / "pg").start()
        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            # commit -> handled latency from the server's own commit times
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        self.restart_postgres()
        self.database_url = self.pg.url()
        apply_migrations(self.database_url, resolve_components(None))
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(LEDGER_SCHEMA)
        self.fauxqs = FauxqsProcess(free_port()).start()
        self.sqs = sqs_client(self.fauxqs.endpoint_url, REGION)
        self.queues = ensure_queues(self.sqs, visibility_timeout=visibility_timeout)
        self.api_port = free_port()
        (self.workdir / "logs").mkdir(exist_ok=True)
        return self

    def restart_postgres(self) -> None:
        assert self.pg is not None
        self.pg.stop()
        self.pg = LocalPostgres(self.workdir / "pg").start()

    def note(self, line: str) -> None:
        """A line in logs/faults.log (wall-clock time first): what was injected when."""
        with (self.workdir / "logs" / "faults.log").open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def set_sqs(self, mode: str) -> None:
        assert self.fauxqs is not None
        set_fault(self.fauxqs.fault_url, mode)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child pointed at this stack (and nothing else)."""
        assert self.fauxqs is not None
        assert self.queues is not None
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SQS_", "PG", "DATABASE_URL", "TXOUTBOX_", "CHAOS_"))
        }
        env.update(
            DATABASE_URL=self.database_url,
            SQS_QUEUE_URL=self.queues.queue_url,
            SQS_DLQ_URL=self.queues.dlq_url,
            SQS_ENDPOINT_URL=self.fauxqs.endpoint_url,
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - the local emulator checks no credentials
            TXOUTBOX_HOME=str(self.workdir / "no-stack"),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
            **extra,
        )
        return env

    def child(self, name: str, argv: list[str], **extra: str) -> Child:
        log = (self.workdir / "logs" / f"{name}.log").open("a")
        return Child(name, argv, self.env(**extra), log)

    def dlq_depth(self) -> int:
        assert self.queues is not None
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queues.dlq_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def stop(self, keep: bool = False) -> None:
        if self.fauxqs is not None:
            self.fauxqs.stop()
        if self.pg is not None:
            self.pg.stop()
        if not keep:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


def txoutbox(*args: str) -> list[str]:
    return [str(BIN / "txoutbox"), *args]


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
