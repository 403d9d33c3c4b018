"""The local SQS (fauxqs 2 behind devstack's launcher): state on disk survives a stop and a SIGKILL, FIFO
order and deduplication intact; it listens on 127.0.0.1 only; its fault switch takes only a JSON body."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.sqs import FauxqsProcess, Queues, ensure_queues, free_port, set_fault, sqs_client
from tests.helpers import poll, tcp_sockets
from txoutbox.config import DEFAULT_REGION


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[FauxqsProcess]:
    proc = FauxqsProcess(free_port(), tmp_path / "sqs").start()
    yield proc
    proc.stop()


def _send(sqs: Any, queues: Queues, group: str, n: int, dedup: str | None = None) -> None:
    sqs.send_message(
        QueueUrl=queues.queue_url,
        MessageBody=json.dumps({"group": group, "n": n}),
        MessageGroupId=group,
        MessageDeduplicationId=dedup or f"{group}-{n}",
    )


def _receive_all(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def more() -> bool:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for m in got:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(bodies) >= expected

    poll(more, 20, 0)
    return bodies


def _restart(proc: FauxqsProcess, kill: bool) -> FauxqsProcess:
    assert proc.pid is not None and proc.data_dir is not None
    if kill:
        os.kill(proc.pid, signal.SIGKILL)
        assert poll(lambda: proc.exit_code() is not None, 10)
    else:
        proc.stop()
    # on another port, as a second `up --sqs-port ...` would: queue URLs follow the new port
    return FauxqsProcess(free_port(), proc.data_dir).start()


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "sigkilled"])
def test_messages_queues_order_and_dedup_survive_a_restart(persistent: FauxqsProcess, kill: bool) -> None:
    sqs = sqs_client(persistent.endpoint_url, DEFAULT_REGION)
    queues = ensure_queues(sqs, "q.fifo", "d.fifo")
    for n in range(10):
        for group in ("a", "b", "c"):
            _send(sqs, queues, group, n)
    sqs.send_message(
        QueueUrl=queues.dlq_url, MessageBody='{"dead": 1}', MessageGroupId="x", MessageDeduplicationId="x1"
    )
    # some received, not deleted: in flight (as with a consumer that crashes) at the restart
    in_flight = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=2)
    assert in_flight["Messages"]

    again = _restart(persistent, kill)
    try:
        sqs = sqs_client(again.endpoint_url, DEFAULT_REGION)
        queues = ensure_queues(sqs, "q.fifo", "d.fifo")  # idempotent: the same queues, found again
        # the relay re-sending events it had sent just before the restart is deduplicated (5-minute window)
        _send(sqs, queues, "a", 0)
        _send(sqs, queues, "b", 9)
        got = _receive_all(sqs, queues.queue_url, 30)
        behind = sqs.receive_message(QueueUrl=queues.queue_url, WaitTimeSeconds=1).get("Messages", [])
        assert behind == []  # no duplicate
        assert len(got) == 30
        for group in ("a", "b", "c"):
            assert [b["n"] for b in got if b["group"] == group] == list(range(10))
        dead = _receive_all(sqs, queues.dlq_url, 1)
        assert dead == [{"dead": 1}]
    finally:
        again.stop()


def test_a_message_made_visible_again_keeps_its_receive_count(persistent: FauxqsProcess) -> None:
    # what `txoutbox dlq list` does to show the DLQ without consuming it
    sqs = sqs_client(persistent.endpoint_url, DEFAULT_REGION)
    queues = ensure_queues(sqs, "v.fifo", "vd.fifo")
    _send(sqs, queues, "a", 1)
    for count in (1, 2):
        got = sqs.receive_message(QueueUrl=queues.queue_url, WaitTimeSeconds=1, AttributeNames=["All"])
        (message,) = got["Messages"]
        assert message["Attributes"]["ApproximateReceiveCount"] == str(count)
        sqs.change_message_visibility(
            QueueUrl=queues.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    again = _restart(persistent, kill=True)
    try:
        sqs = sqs_client(again.endpoint_url, DEFAULT_REGION)
        got = sqs.receive_message(QueueUrl=queues.queue_url, WaitTimeSeconds=1, AttributeNames=["All"])
        assert got["Messages"][0]["Attributes"]["ApproximateReceiveCount"] == "3"
    finally:
        again.stop()


def test_in_memory_without_a_data_dir(tmp_path: Path) -> None:
    proc = FauxqsProcess(free_port()).start()
    try:
        sqs = sqs_client(proc.endpoint_url, DEFAULT_REGION)
        queues = ensure_queues(sqs, "m.fifo", "md.fifo")
        _send(sqs, queues, "a", 1)
    finally:
        proc.stop()
    assert list(tmp_path.iterdir()) == []


def _listening(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on `port` (from the kernel's tables)."""
    return {address for address, _ in tcp_sockets(port, "0A")}  # 0A: LISTEN


def test_listens_on_loopback_only(fauxqs: FauxqsProcess) -> None:
    assert _listening(fauxqs.port) == {"0100007F"}  # 127.0.0.1, and neither 0.0.0.0 nor [::]


def _post(url: str, body: bytes | None, content_type: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, method="POST", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fault_switch_takes_only_a_json_body(fauxqs: FauxqsProcess) -> None:
    url = fauxqs.fault_url
    # what a cross-site HTML form can send: a query string, a url-encoded or text/plain body
    assert _post(f"{url}?mode=deny", b"", None)[0] == 415
    assert _post(url, b"mode=deny", "application/x-www-form-urlencoded")[0] == 415
    assert _post(url, b'{"mode": "deny"}', "text/plain")[0] == 415
    assert _post(url, b"", "application/json")[0] == 400
    assert _post(url, b'{"mode": "sideways"}', "application/json")[0] == 400
    with urllib.request.urlopen(url, timeout=5) as response:
        assert json.loads(response.read()) == {"mode": "allow"}  # none of the above switched it
    try:
        assert _post(url, b'{"mode": "deny"}', "application/json") == (200, {"mode": "deny"})
        assert set_fault(url, "allow") == "allow"
    finally:
        set_fault(url, "allow")
