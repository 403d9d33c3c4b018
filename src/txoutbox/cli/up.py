"""`txoutbox up`: the whole reference system on this machine, in one command.

Order of start: PostgreSQL (data in $TXOUTBOX_HOME, kept across runs), SQS (fauxqs on 127.0.0.1), queues,
migrations, then the API, the relay(s) and the payment service as child processes whose output is prefixed
with their names. Order of stop (Ctrl-C / SIGTERM): API first (no new bookings), relays (they finish or
release their batches), a short wait for the queue to drain, payments, SQS, PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from txoutbox.cli.common import check_port
from txoutbox.config import DEFAULT_REGION, read_stack_file, txoutbox_home
from txoutbox.errors import ConfigurationError

_print_lock = threading.Lock()
# Variables that would point children at other infrastructure than the stack we start.
_FOREIGN_ENV = ("DATABASE_URL", "PGHOST", "PGDATABASE", "SQS_QUEUE_URL", "SQS_DLQ_URL", "SQS_ENDPOINT_URL")


def emit(name: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{name:<9}| {line}\n")
        sys.stdout.flush()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If `up` itself is killed (SIGKILL), its children must not outlive it.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "txoutbox", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        self._pump = threading.Thread(target=self._copy, args=(self.proc.stdout,), daemon=True)
        self._pump.start()

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            emit(self.name, line.rstrip())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 25.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                emit(self.name, f"did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._pump.join(2)


def _wait_http(url: str, timeout: float, child: Child) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            if response.status == 200:
                return True
        time.sleep(0.1)
    return False


def _queue_drained(sqs: Any, queue_url: str) -> bool:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0
    )


def run_stack(*, host: str, port: int, sqs_port: int, relays: int, metrics_port: int) -> None:
    from devstack.node import node_binary
    from devstack.postgres import LocalPostgres
    from devstack.sqs import FauxqsProcess, ensure_queues, sqs_client
    from devstack.waiting import poll
    from txoutbox.migrate import apply_migrations

    home = txoutbox_home()
    running = read_stack_file(home)
    if running is not None:
        raise ConfigurationError(f"a local stack is already running from {home} (process {running['pid']})")
    check_port(host, port, "the booking API")
    check_port("127.0.0.1", sqs_port, "the local SQS")
    if metrics_port:
        check_port("127.0.0.1", metrics_port, "the relay's metrics")
    node_binary()  # fail now, with one sentence, if Node is missing

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            emit("up", "second signal: stopping at once")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    home.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres(home / "postgres")
    fauxqs = FauxqsProcess(sqs_port, output=lambda line: emit("sqs", line))
    children: list[Child] = []
    stack_file = home / "stack.json"
    try:
        started = time.monotonic()
        postgres.start()
        emit("postgres", f"PostgreSQL ready, data in {postgres.data_dir}")
        fauxqs.start()
        sqs = sqs_client(fauxqs.endpoint_url, DEFAULT_REGION)
        queues = ensure_queues(sqs)
        emit("sqs", f"queues ready: {queues.queue_url} (DLQ {queues.dlq_url}, maxReceiveCount 10)")
        database_url = postgres.url()
        done = apply_migrations(database_url)
        emit("migrate", ", ".join(m.label for m in done) if done else "schema up to date")
        stack_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "database_url": database_url,
                    "sqs_queue_url": queues.queue_url,
                    "sqs_dlq_url": queues.dlq_url,
                    "sqs_endpoint_url": fauxqs.endpoint_url,
                    "fault_url": fauxqs.fault_url,
                    "aws_region": DEFAULT_REGION,
                    "api_url": f"http://{host}:{port}",
                },
                indent=2,
            )
        )

        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        env.update({"TXOUTBOX_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        api = Child("api", ["api", "--host", host, "--port", str(port)], env)
        children.append(api)
        for n in range(relays):
            relay_env = dict(env)
            if n == 0 and metrics_port:
                relay_env["TXOUTBOX_METRICS_PORT"] = str(metrics_port)
            children.append(Child("relay" if relays == 1 else f"relay-{n + 1}", ["relay"], relay_env))
        payments = Child("payments", ["payments"], env)
        children.append(payments)
        if _wait_http(f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/", 30, api):  # noqa: S104
            emit(
                "up",
                f"ready in {time.monotonic() - started:.1f} s: booking API http://{host}:{port}/api/flights, "
                f"Swagger UI http://{host}:{port}/swagger-ui/index.html; Ctrl-C stops everything",
            )
        while not stop.wait(0.5):
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    emit("up", f"{child.name} exited with status {code}; stopping the stack")
                    stop.set()
                    break
        emit("up", "stopping: api, relay, payments, sqs, postgres")
        api.stop(signal.SIGINT)
        for child in children[1:-1]:
            child.stop()
        if payments.proc.poll() is None and not poll(lambda: _queue_drained(sqs, queues.queue_url), 10, 0.2):
            emit(
                "up",
                "messages still queued: the in-memory SQS loses them (the payments inbox is safe)",
            )
        payments.stop()
    finally:
        for child in reversed(children):
            child.stop()
        with contextlib.suppress(FileNotFoundError):
            if stack_file.exists() and json.loads(stack_file.read_text()).get("pid") == os.getpid():
                stack_file.unlink()
        fauxqs.stop()
        postgres.stop()
    emit("up", "stopped; data kept in " + str(Path(home)))
