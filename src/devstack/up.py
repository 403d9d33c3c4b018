"""`txoutbox up`: the whole reference system on this machine, in one command.

Order of start: PostgreSQL and the local SQS (both keep their data in $TXOUTBOX_HOME, default `.txoutbox/`),
queues, migrations, then the API, the relay(s), the payment service and the operator console as child
processes whose output is prefixed with their names. Order of stop (Ctrl-C / SIGTERM): API first (no new
bookings), relays (they finish or release their batches), payments, console, SQS, PostgreSQL. Nothing is
lost at a stop, a crash or a SIGKILL: the outbox is in PostgreSQL, the queues are on disk.

`up` watches everything it started: when a process or its PostgreSQL / SQS ends on its own, one line names it
and the stack stops. Children die with `up` even when it is SIGKILLed (PR_SET_PDEATHSIG); the PostgreSQL
server is not its child (pg_ctl detaches it), so the next `up` stops such a leftover itself and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.node import find_package, node_binary
from devstack.postgres import LocalPostgres, postmaster_pid, stop_postmaster
from devstack.process import Child, txoutbox_command
from devstack.sqs import FauxqsProcess, Queues, ensure_queues, sqs_client
from payments.queues import MAX_RECEIVE_COUNT
from txoutbox.cli.common import check_port
from txoutbox.config import DEFAULT_REGION, read_stack_file, txoutbox_home
from txoutbox.errors import ConfigurationError
from txoutbox.processes import process_alive

_print_lock = threading.Lock()
# Variables that would point children at other infrastructure than the stack we start.
_FOREIGN_ENV = ("DATABASE_URL", "PGHOST", "PGDATABASE", "SQS_QUEUE_URL", "SQS_DLQ_URL", "SQS_ENDPOINT_URL")


def emit(name: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{name:<9}| {line}\n")
        sys.stdout.flush()


def _printer(name: str) -> Callable[[str], None]:
    return lambda line: emit(name, line)


@dataclass(frozen=True)
class StackOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    sqs_port: int = 9324
    relays: int = 1
    payments: int = 1
    metrics_port: int = 9464
    console_port: int = 8081


def _wait_http(url: str, timeout: float, child: Child) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            if response.status == 200:
                return True
        time.sleep(0.1)
    return False


def _depth(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attrs.values())


def stop_leftovers(home: Path) -> None:
    """Stop what an `up` that was killed without stopping (SIGKILL, power cut) left running from `home`."""
    path = home / "stack.json"
    try:
        previous = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = {}
    stopped: list[str] = []
    # Children and the SQS die with `up`; this catches the rare one that did not (and other platforms).
    for name, pid in (previous.get("pids") or {}).items():
        if isinstance(pid, int) and process_alive(pid) and _started_by_us(pid, home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"{name} (pid {pid})")
    pg = postmaster_pid(home / "postgres")
    if pg is not None:
        stop_postmaster(pg)
        stopped.append(f"PostgreSQL (pid {pg})")
    if stopped:
        who = f" (pid {previous['pid']})" if isinstance(previous.get("pid"), int) else ""
        emit(
            "up",
            f"the previous `up`{who} ended without stopping its stack: stopped what it left running, "
            f"{', '.join(stopped)}; its data is kept",
        )
    path.unlink(missing_ok=True)


def _started_by_us(pid: int, home: Path) -> bool:
    # A pid may have been reused since: only kill a process whose environment names this stack's home.
    with contextlib.suppress(OSError):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return f"TXOUTBOX_HOME={home}".encode() in environ
    return False


class Stack:
    """One run of the local stack; `run()` returns the exit status of `up`."""

    def __init__(self, options: StackOptions) -> None:
        self.o = options
        self.home = txoutbox_home()
        self.stop_requested = threading.Event()
        self.postgres = LocalPostgres(self.home / "postgres")
        self.fauxqs = FauxqsProcess(self.o.sqs_port, self.home / "sqs", output=_printer("sqs"))
        self.children: list[tuple[str, Child]] = []
        self.sqs: Any = None
        self.queues: Queues | None = None
        self.failed = False

    def preflight(self) -> None:
        running = read_stack_file(self.home)
        if running is not None:
            raise ConfigurationError(
                f"a local stack is already running from {self.home} (process {running['pid']})"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        os.environ["TXOUTBOX_HOME"] = str(self.home)  # every child names its stack (see _started_by_us)
        stop_leftovers(self.home)
        check_port(self.o.host, self.o.port, "the booking API")
        check_port("127.0.0.1", self.o.sqs_port, "the local SQS")
        if self.o.metrics_port:
            check_port("127.0.0.1", self.o.metrics_port, "the relay's metrics")
        if self.o.console_port:
            check_port("127.0.0.1", self.o.console_port, "the operator console")
        node_binary()  # fail now, in one sentence, rather than after PostgreSQL started
        find_package("fauxqs")

    def run(self) -> int:
        self.preflight()

        def on_signal(_signum: int, _frame: Any) -> None:
            if self.stop_requested.is_set():
                emit("up", "second signal: stopping at once")
            self.stop_requested.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            self._start()
            self._supervise()
            self._stop_children()
        finally:
            self._teardown()
        return 1 if self.failed else 0

    def _start(self) -> None:
        from txoutbox.migrate import apply_migrations

        started = time.monotonic()
        self.postgres.start()
        emit("postgres", f"PostgreSQL ready, data in {self.postgres.data_dir}")
        self.fauxqs.start()
        self.sqs = sqs_client(self.fauxqs.endpoint_url, DEFAULT_REGION)
        self.queues = queues = ensure_queues(self.sqs)
        emit(
            "sqs",
            f"queues ready: {queues.queue_url} (DLQ {queues.dlq_url}, maxReceiveCount {MAX_RECEIVE_COUNT}); "
            f"{_depth(self.sqs, queues.queue_url)} message(s) waiting, {_depth(self.sqs, queues.dlq_url)} in "
            "the DLQ",
        )
        database_url = self.postgres.url()
        done = apply_migrations(database_url)
        emit("migrate", ", ".join(m.label for m in done) if done else "schema up to date")
        self._write_stack_file(database_url)

        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        env.update({"TXOUTBOX_HOME": str(self.home), "PYTHONUNBUFFERED": "1"})
        o = self.o
        api = self._spawn("api", ["api", "--host", o.host, "--port", str(o.port)], env)
        for n in range(o.relays):
            relay_env = dict(env)
            if n == 0 and o.metrics_port:
                relay_env["TXOUTBOX_METRICS_PORT"] = str(o.metrics_port)
            self._spawn("relay" if o.relays == 1 else f"relay-{n + 1}", ["relay"], relay_env)
        for n in range(o.payments):
            self._spawn("payments" if o.payments == 1 else f"payments-{n + 1}", ["payments"], env)
        if o.console_port:
            self._spawn("console", ["console", "--port", str(o.console_port)], env)
        self._write_stack_file(database_url)  # now with the children's pids
        local = "127.0.0.1" if o.host in ("0.0.0.0", "::") else o.host  # noqa: S104
        if _wait_http(f"http://{local}:{o.port}/", 30, api):
            console = f", operator console http://127.0.0.1:{o.console_port}/" if o.console_port else ""
            paused = "; payment service not started (--payments 0)" if not o.payments else ""
            emit(
                "up",
                f"ready in {time.monotonic() - started:.1f} s: "
                f"booking API http://{o.host}:{o.port}/api/flights, "
                f"Swagger UI http://{o.host}:{o.port}/swagger-ui/index.html{console}{paused}; "
                "Ctrl-C stops everything",
            )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(txoutbox_command(*args), env, on_line=_printer(name))
        self.children.append((name, child))
        return child

    def _write_stack_file(self, database_url: str) -> None:
        assert self.queues is not None
        pids = {name: child.pid for name, child in self.children}
        if self.fauxqs.pid is not None:
            pids["sqs"] = self.fauxqs.pid
        stack = {
            "pid": os.getpid(),
            "database_url": database_url,
            "sqs_queue_url": self.queues.queue_url,
            "sqs_dlq_url": self.queues.dlq_url,
            "sqs_endpoint_url": self.fauxqs.endpoint_url,
            "fault_url": self.fauxqs.fault_url,
            "aws_region": DEFAULT_REGION,
            "api_url": f"http://{self.o.host}:{self.o.port}",
            "pids": pids,
        }
        if self.o.console_port:
            stack["console_url"] = f"http://127.0.0.1:{self.o.console_port}"
        tmp = self.home / "stack.json.tmp"
        tmp.write_text(json.dumps(stack, indent=2))
        tmp.replace(self.home / "stack.json")

    def _supervise(self) -> None:
        while not self.stop_requested.wait(0.5):
            problem = self._check()
            if problem:
                emit("up", f"{problem}; stopping the stack")
                self.failed = True
                return

    def _check(self) -> str | None:
        code = self.fauxqs.exit_code()
        if code is not None:
            return f"the local SQS (fauxqs, pid {self.fauxqs.pid}) exited with status {code}"
        if not self.postgres.alive():
            return f"PostgreSQL (data in {self.postgres.data_dir}) is no longer running"
        for name, child in self.children:
            code = child.poll()
            if code is not None:
                return f"{name} exited with status {code}"
        return None

    def _stop_children(self) -> None:
        emit("up", "stopping: " + ", ".join([name for name, _ in self.children] + ["sqs", "postgres"]))
        for name, child in self.children:
            # the API first, so no booking arrives while the rest stops (SIGINT: uvicorn's graceful stop)
            child.stop(signal.SIGINT if name == "api" else signal.SIGTERM, 10 if self.failed else 25)

    def _teardown(self) -> None:
        for _name, child in reversed(self.children):
            child.stop(timeout=10)
        kept = self._kept()
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            path = self.home / "stack.json"
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        self.fauxqs.stop()
        self.postgres.stop()
        emit("up", f"stopped; kept in {self.home}: {kept}")

    def _kept(self) -> str:
        what = "the database (bookings, outbox, payments) in postgres/"
        if self.sqs is None or self.queues is None or self.fauxqs.exit_code() is not None:
            return what + ", the queues in sqs/"
        try:
            waiting = _depth(self.sqs, self.queues.queue_url)
            dead = _depth(self.sqs, self.queues.dlq_url)
        except Exception:  # the SQS may be unreachable (fault switch down): the files say the same
            return what + ", the queues in sqs/"
        return (
            f"{what}, {waiting} message(s) waiting in the queue and {dead} in the DLQ in sqs/ "
            "(the next `up` delivers them)"
        )


def run_stack(options: StackOptions) -> int:
    """Run the local stack until Ctrl-C / SIGTERM or a failure; return the exit status."""
    return Stack(options).run()
