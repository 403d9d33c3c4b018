"""The local SQS: fauxqs on 127.0.0.1, the reference system's queues, and the fault switch."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from devstack.node import find_package, node_binary
from payments.queues import DLQ_NAME, MAX_RECEIVE_COUNT, QUEUE_NAME
from txoutbox import connections
from txoutbox.cli.common import port_is_free
from txoutbox.errors import ConfigurationError

LAUNCHER = Path(__file__).with_name("fauxqs_launcher.mjs")
MAX_MESSAGE_BYTES = 262_144
FAULT_MODES = ("allow", "deny", "down")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FauxqsProcess:
    """A running fauxqs, started by `start()`; `stop()` ends it (its messages live only in memory)."""

    def __init__(self, port: int, output: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.fault_url = f"{self.endpoint_url}/_devstack/fault"
        self._output = output
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> FauxqsProcess:
        if not port_is_free(self.port):
            raise ConfigurationError(
                f"port {self.port} on 127.0.0.1 is already in use, so the local SQS cannot start there: "
                "stop whatever uses it or set TXOUTBOX_SQS_PORT to another port"
            )
        node = node_binary()
        fauxqs = find_package("fauxqs")
        self._proc = subprocess.Popen(
            [node, str(LAUNCHER), str(fauxqs), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C goes to `up`, which stops us last, in order
        )
        assert self._proc.stdout is not None
        ready = threading.Event()
        lines: list[str] = []
        threading.Thread(target=self._pump, args=(self._proc.stdout, ready, lines), daemon=True).start()
        if not ready.wait(timeout) or self._proc.poll() is not None:
            self.stop()
            detail = " / ".join(lines[-3:]) or "no output"
            raise ConfigurationError(f"fauxqs did not start on 127.0.0.1:{self.port}: {detail}")
        return self

    def _pump(self, stream: TextIO, ready: threading.Event, lines: list[str]) -> None:
        for line in stream:
            line = line.rstrip()
            lines.append(line)
            if line.startswith("fauxqs listening"):
                ready.set()
            if self._output:
                self._output(line)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def sqs_client(endpoint_url: str, region: str) -> Any:
    """A synchronous botocore SQS client for the local endpoint."""
    return connections.sqs_client(region, endpoint_url, local=True)


@dataclass(frozen=True, slots=True)
class Queues:
    queue_url: str
    dlq_url: str


def ensure_queues(
    client: Any,
    queue_name: str = QUEUE_NAME,
    dlq_name: str = DLQ_NAME,
    *,
    visibility_timeout: int = 30,
    max_receive_count: int = MAX_RECEIVE_COUNT,
) -> Queues:
    """Create the FIFO queue and its dead-letter queue if missing (CreateQueue is idempotent)."""
    dlq_url = client.create_queue(
        QueueName=dlq_name,
        Attributes={"FifoQueue": "true", "MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = client.create_queue(
        QueueName=queue_name,
        Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": "false",
            "VisibilityTimeout": str(visibility_timeout),
            "MaximumMessageSize": str(MAX_MESSAGE_BYTES),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
            ),
        },
    )["QueueUrl"]
    return Queues(queue_url=queue_url, dlq_url=dlq_url)


def set_fault(fault_url: str, mode: str, timeout: float = 5.0) -> str:
    """Switch the local SQS to `allow`, `deny` or `down`; return the mode now in force."""
    if mode not in FAULT_MODES:
        raise ConfigurationError(f"fault mode must be one of {', '.join(FAULT_MODES)}, got {mode!r}")
    request = urllib.request.Request(f"{fault_url}?mode={mode}", method="POST", data=b"")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - local http URL
            return str(json.loads(response.read())["mode"])
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigurationError(f"the local SQS fault switch at {fault_url} did not answer: {exc}") from None
