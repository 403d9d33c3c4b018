"""Profile the engine's processes under load: `python -m benchmarks.profiling WHAT...` (not in the suite).

py-spy samples the child process from the outside (no code change) at 250 Hz and writes collapsed stacks;
this module turns them into the summaries docs/performance.md quotes, written to
benchmarks/results/profiles/WHAT.txt: CPU by stage of the work, by package, and the hottest functions.

    python -m benchmarks.profiling relay-null      # a relay draining 100,000 events, null publisher
    python -m benchmarks.profiling relay-sqs       # the same into fauxqs
    python -m benchmarks.profiling payments        # the payment service draining 50,000 queued events
    python -m benchmarks.profiling api             # the booking API under 32 connections of wrk

Samples of threads that only wait (a thread pool blocked on its queue) are left out: they are not CPU.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.infra import RESULTS, Child, Stack, progress, seed_backlog, txoutbox
from txoutbox.ops import outbox_count

# Stages: the first marker found in a sample's stack (in this order) names the stage it is counted in. A
# marker is a function name, or `pkg:a,b` for any frame in those packages (work of a client library that
# runs in callbacks or tasks of its own, whose stacks do not show who asked for it).
RELAY_STAGES = (
    ("claim: the CLAIM statement and building the messages", "RelayStore.claim"),
    ("acknowledge: DELETE of the published rows", "RelayStore.acknowledge"),
    ("SQS client: request build, signing, HTTP, response parsing", "AioBaseClient._make_api_call"),
    ("SQS client: request build, signing, HTTP, response parsing", "pkg:botocore,aiobotocore,aiohttp"),
    ("publish: batching, SendMessageBatch entries, results, metrics", "Relay._publish"),
    ("publish: batching, SendMessageBatch entries, results, metrics", "Relay._send"),
    ("heartbeat, listener, health", "beat"),
    ("event loop, psycopg I/O, other", ""),
)
PAYMENTS_STAGES = (
    ("log line per event ('Flight event received ... Processing payment.')", "Logger.info"),
    ("SQS DeleteMessageBatch (aiobotocore)", "Consumer._delete"),
    ("transaction: inbox insert + payments insert", "Consumer._process_batch"),
    ("parse the envelopes", "parse_message"),
    ("SQS ReceiveMessage and the SQS client's I/O (aiobotocore)", "pkg:botocore,aiobotocore,aiohttp"),
    ("event loop, psycopg I/O, other", ""),
)
API_STAGES = (
    ("outbox insert (txoutbox.add_event_async: validate, serialise, INSERT ... unnest)", "add_events_async"),
    ("BEGIN / COMMIT (psycopg transaction)", "AsyncTransaction.__aenter__"),
    ("BEGIN / COMMIT (psycopg transaction)", "AsyncTransaction.__aexit__"),
    ("flight insert (INSERT ... RETURNING)", "AsyncConnection.execute"),
    ("pool checkout and return", "AsyncConnectionPool.connection"),
    ("request body validation (pydantic)", "BaseModel.model_validate_json"),
    ("booking handler: the stored flight as JSON, response", "book_flight"),
    ("HTTP server, routing, middleware (uvicorn, Starlette, FastAPI)", ""),
)
_IDLE = ("_worker (concurrent/futures/thread.py:81)", "_worker (concurrent/futures/thread.py:83)")


def _samples(collapsed: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if frames[-1].startswith(_IDLE):
            continue  # a pool thread waiting for work
        out.append((frames, int(count_text)))
    return out


def summarize(collapsed: Path, stages: tuple[tuple[str, str], ...] = (), top: int = 25) -> str:
    """Stages, packages and functions from py-spy's `--format raw` output, in % of the CPU samples."""
    samples = _samples(collapsed)
    total = sum(c for _, c in samples)
    if total == 0:
        return "no samples\n"
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    module_counts: collections.Counter[str] = collections.Counter()
    stage_counts: collections.Counter[str] = collections.Counter()
    for frames, count in samples:
        self_counts[_short(frames[-1])] += count
        module_counts[_module(frames[-1])] += count
        for frame in set(map(_short, frames)):
            incl_counts[frame] += count
        if stages:
            for label, marker in stages:
                if _matches(frames, marker):
                    stage_counts[label] += count
                    break
    lines = [f"CPU samples: {total} (250 Hz)", ""]
    if stages:
        lines += ["by stage of the work                                           %", "-" * 72]
        lines += [f"{100 * c / total:5.1f}  {name}" for name, c in stage_counts.most_common()]
        lines.append("")
    lines += ["self time by package                                           %", "-" * 72]
    lines += [f"{100 * c / total:5.1f}  {name}" for name, c in module_counts.most_common(15)]
    lines += ["", "self time by function                                          %", "-" * 72]
    lines += [f"{100 * c / total:5.1f}  {name}" for name, c in self_counts.most_common(top)]
    lines += ["", "inclusive time (function and what it calls)                    %", "-" * 72]
    deep = [(n, c) for n, c in incl_counts.most_common() if c < 0.98 * total][:top]
    lines += [f"{100 * c / total:5.1f}  {name}" for name, c in deep]
    return "\n".join(lines) + "\n"


def _matches(frames: list[str], marker: str) -> bool:
    if not marker:
        return True
    if marker.startswith("pkg:"):
        # py-spy names frames "function (package/module.py:line)", or with a longer path
        packages = [(f" ({p}/", f"site-packages/{p}/") for p in marker[4:].split(",")]
        return any(a in f or b in f for f in frames for a, b in packages)
    names = (f.split(" (", 1)[0] for f in frames)
    return any(n == marker or n.endswith("." + marker) for n in names)


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/module.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _module(frame: str) -> str:
    _, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/src/" in path:
        return path.split("/src/", 1)[1].split("/", 1)[0]
    if "lib/python3.11/" in path:
        return "stdlib:" + path.split("lib/python3.11/", 1)[1].split("/", 1)[0]
    return path or "?"


def _pyspy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def _record(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_pyspy(), "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(30)


def profile_relay(stack: Stack, work: Path, *, null: bool, events: int = 100_000) -> str:
    stack.truncate()
    seed_backlog(stack.database_url, events)
    queues = None if null else stack.new_queues("prof")
    args = txoutbox("relay", "--null-publisher") if null else txoutbox("relay")
    relay = Child(args, stack.env(queues), work / "relay.log", ready_line="started:")
    relay.wait_ready()
    raw = work / "relay.collapsed"
    spy = _record(relay.pid, raw)
    started = time.monotonic()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while outbox_count(conn) > 0 and time.monotonic() - started < 120:
            time.sleep(0.1)
    seconds = time.monotonic() - started
    _stop(spy)
    relay.stop()
    if queues is not None:
        stack.delete_queues(queues)
    what = "relay --null-publisher" if null else "relay -> fauxqs"
    return f"{what}: {events:,} events in {seconds:.1f} s under py-spy\n" + summarize(raw, RELAY_STAGES)


def profile_payments(stack: Stack, work: Path, events: int = 50_000) -> str:
    from benchmarks.payments_drain import enqueue

    stack.truncate()
    queues = stack.new_queues("profpay")
    enqueue(stack, queues.queue_url, events)
    consumer = Child(
        txoutbox("payments"), stack.env(queues), work / "payments.log", ready_line="consumer started"
    )
    consumer.wait_ready()
    raw = work / "payments.collapsed"
    spy = _record(consumer.pid, raw)
    started = time.monotonic()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while time.monotonic() - started < 120:
            row = conn.execute("SELECT count(*) FROM public.payments").fetchone()
            if row and row[0] >= events:
                break
            time.sleep(0.1)
    seconds = time.monotonic() - started
    _stop(spy)
    consumer.stop()
    stack.delete_queues(queues)
    return f"payments: {events:,} events in {seconds:.1f} s under py-spy\n" + summarize(raw, PAYMENTS_STAGES)


def profile_api(stack: Stack, work: Path, seconds: int = 10) -> str:
    from benchmarks.__main__ import _wait_http
    from benchmarks.api_load import run_load
    from devstack.sqs import free_port

    stack.truncate()
    port = free_port()
    server = Child(txoutbox("api", "--port", str(port)), stack.env(), work / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/", 30)
        run_load(url + "/api/flights", 32, 3, work)
        raw = work / "api.collapsed"
        spy = _record(server.pid, raw)
        result = run_load(url + "/api/flights", 32, seconds, work)
        _stop(spy)
    finally:
        server.stop()
    head = (
        f"api: {result.requests_per_s:,.0f} bookings/s for {seconds} s "
        f"(32 connections, {result.tool}) under py-spy\n"
    )
    return head + summarize(raw, API_STAGES)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profiling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", nargs="+", choices=["relay-null", "relay-sqs", "payments", "api"])
    parser.add_argument("--out", type=Path, default=RESULTS / "profiles")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="txo-profile-"))
    stack = Stack().start()
    try:
        for what in args.what:
            progress(f"profiling {what}")
            if what == "payments":
                text = profile_payments(stack, work)
            elif what == "api":
                text = profile_api(stack, work)
            else:
                text = profile_relay(stack, work, null=what == "relay-null")
            (args.out / f"{what}.txt").write_text(text)
            print(text)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
