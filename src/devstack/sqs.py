"""The local SQS: fauxqs on 127.0.0.1 (state on disk when given a folder), the reference system's queues,
and the fault switch."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.node import find_package, node_binary, node_env
from devstack.process import Child
from payments.queues import DLQ_NAME, MAX_RECEIVE_COUNT, QUEUE_NAME
from txoutbox import connections
from txoutbox.cli.common import port_is_free
from txoutbox.errors import ConfigurationError

LAUNCHER = Path(__file__).with_name("sqs_server.mjs")
MAX_MESSAGE_BYTES = 262_144


# Below Linux's ephemeral range (32768-60999 by default), where the kernel picks the local ports of outgoing
# connections: a port handed out there can be taken by some client's connection before our server binds it.
_PORTS = range(20_000, 32_768)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, chosen outside the ephemeral range."""
    for port in random.sample(_PORTS, 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1 between 20000 and 32767")


class FauxqsProcess:
    """fauxqs on 127.0.0.1:`port`, started by `start()`, ended by `stop()`.

    With `data_dir` every queue and message is written through to SQLite there and found again by the next
    start (also after a SIGKILL); without it, state lives in memory (the tests' fixture: faster).
    """

    def __init__(
        self, port: int, data_dir: Path | None = None, output: Callable[[str], None] | None = None
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.fault_url = f"{self.endpoint_url}/_devstack/fault"
        self._output = output
        self._child: Child | None = None

    def start(self, timeout: float = 15.0) -> FauxqsProcess:
        if not port_is_free(self.port):
            raise ConfigurationError(
                f"port {self.port} on 127.0.0.1 is already in use, so the local SQS cannot start there: "
                "stop whatever uses it or choose another port (--sqs-port)"
            )
        args = [node_binary(), str(LAUNCHER), str(find_package("fauxqs")), str(self.port)]
        if self.data_dir is not None:
            args.append(str(self.data_dir))
        self._child = Child(args, node_env(), on_line=self._output, ready_line="fauxqs listening")
        if not self._child.wait_ready(timeout):
            lines = list(self._child.last_lines)
            self.stop()
            detail = " / ".join(lines[-3:]) or "no output"
            raise ConfigurationError(f"fauxqs did not start on 127.0.0.1:{self.port}: {detail}")
        return self

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def exit_code(self) -> int | None:
        """The exit status once the started process has ended, else None."""
        return self._child.poll() if self._child else None

    def stop(self, timeout: float = 5.0) -> None:
        if self._child is not None:
            self._child.stop(timeout=timeout)


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
    from txoutbox.console.fault import set_mode  # the one client of the switch's HTTP contract

    return set_mode(fault_url, mode, timeout)
