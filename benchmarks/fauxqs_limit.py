"""The local SQS's own limit, in memory and persistent: boto3, SendMessageBatch of 10, THREADS threads; then
ReceiveMessage of 10 + DeleteMessageBatch in THREADS threads, until every message is gone.

`python -m benchmarks.fauxqs_limit [MESSAGES] [THREADS]` prints the figures and writes them to
`benchmarks/results/fauxqs_limit.json`; `measure_limits()` gives the same to the suite.

Two fauxqs processes are measured, each fresh, one after the other:
- `in_memory`: no data folder. The tests and the benchmark suite's stack run this one, so the relay and
  payments figures of the suite are set against the in-memory limit (`relay_figures_set_against`).
- `persistent`: a data folder, as `txoutbox up` runs it (every mutation written through to SQLite). A local
  stack's relay cannot publish faster than this.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.infra import ARRIVAL, ARRIVAL_AT, DEPARTURE, DEPARTURE_AT, REGION, RESULTS, median
from devstack.sqs import FauxqsProcess, ensure_queues, free_port, sqs_client

RUNS = 3


def _entry(n: int) -> dict[str, Any]:
    event_id = uuid.uuid4()
    body = {
        "eventId": str(event_id),
        "eventType": "FlightBooked",
        "aggregateType": "Flight",
        "aggregateId": str(n % 10_000 + 1),
        "data": {
            "id": n,
            "departureAirport": DEPARTURE,
            "arrivalAirport": ARRIVAL,
            "departureDateTime": DEPARTURE_AT,
            "arrivalDateTime": ARRIVAL_AT,
        },
    }
    return {
        "Id": str(n % 10),
        "MessageBody": json.dumps(body, separators=(",", ":")),
        "MessageGroupId": str(n % 10_000 + 1),
        "MessageDeduplicationId": event_id.hex,
    }


def _in_threads(threads: int, work: Any) -> float:
    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - started


def _one_run(endpoint: str, messages: int, threads: int) -> dict[str, float]:
    client = sqs_client(endpoint, REGION)  # botocore clients are thread-safe
    suffix = uuid.uuid4().hex[:8]
    queues = ensure_queues(client, f"limit-{suffix}.fifo", f"limit-{suffix}-dlq.fifo")
    batches = [[_entry(n) for n in range(s, min(s + 10, messages))] for s in range(0, messages, 10)]
    lock = threading.Lock()
    failed = 0

    def send() -> None:
        nonlocal failed
        while True:
            with lock:
                if not batches:
                    return
                batch = batches.pop()
            response = client.send_message_batch(QueueUrl=queues.queue_url, Entries=batch)
            with lock:
                failed += len(response.get("Failed", []))

    send_s = _in_threads(threads, send)
    received = 0

    def receive() -> None:
        nonlocal received
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if received >= messages:
                    return
            got = client.receive_message(
                QueueUrl=queues.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if got:
                client.delete_message_batch(
                    QueueUrl=queues.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
                )
                with lock:
                    received += len(got)

    receive_s = _in_threads(threads, receive)
    client.delete_queue(QueueUrl=queues.queue_url)
    client.delete_queue(QueueUrl=queues.dlq_url)
    if failed or received != messages:
        raise RuntimeError(f"fauxqs limit run: {failed} failed sends, {received} of {messages} received")
    return {"send": messages / send_s, "receive_delete": messages / receive_s}


def measure(messages: int, threads: int, persistent: bool) -> dict[str, Any]:
    """Median of RUNS runs on a fresh fauxqs (with a data folder when `persistent`)."""
    folder = Path(tempfile.mkdtemp(prefix="txo-fauxqs-limit-"))
    proc = FauxqsProcess(free_port(), folder / "sqs" if persistent else None).start()
    try:
        runs = [_one_run(proc.endpoint_url, messages, threads) for _ in range(RUNS)]
    finally:
        proc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "send_msg_per_s": median([r["send"] for r in runs]),
        "receive_delete_msg_per_s": median([r["receive_delete"] for r in runs]),
        "runs": runs,
    }


def measure_limits(messages: int = 20_000, threads: int = 8) -> dict[str, Any]:
    """Both limits, in the keys the suite's `extra` and the README use."""
    memory = measure(messages, threads, persistent=False)
    disk = measure(messages, threads, persistent=True)
    return {
        "fauxqs_in_memory_send_msg_per_s": memory["send_msg_per_s"],
        "fauxqs_in_memory_receive_delete_msg_per_s": memory["receive_delete_msg_per_s"],
        "fauxqs_persistent_send_msg_per_s": disk["send_msg_per_s"],
        "fauxqs_persistent_receive_delete_msg_per_s": disk["receive_delete_msg_per_s"],
        "fauxqs_limit_method": f"boto3, {threads} threads, SendMessageBatch of 10 / ReceiveMessage of 10 + "
        f"DeleteMessageBatch, {messages} messages, median of {RUNS} runs",
        # the benchmark suite's Stack runs fauxqs without a data folder: its relay/payments figures are
        # measured against (and compared with) the in-memory limit
        "relay_figures_set_against": "in_memory",
        "fauxqs_limit_runs": {"in_memory": memory["runs"], "persistent": disk["runs"]},
    }


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    result = measure_limits(messages, threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fauxqs_limit.json").write_text(json.dumps(result, indent=2) + "\n")
    for mode in ("in_memory", "persistent"):
        print(
            f"fauxqs {mode.replace('_', ' ')}: "
            f"{result[f'fauxqs_{mode}_send_msg_per_s']:,.0f} send, "
            f"{result[f'fauxqs_{mode}_receive_delete_msg_per_s']:,.0f} receive+delete msg/s"
        )


if __name__ == "__main__":
    main()
