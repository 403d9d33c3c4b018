"""Load on `POST /api/flights` from another process: wrk when installed, else a lean asyncio client.

wrk (Debian's `wrk`, which `make bench` installs when missing) is preferred: it is C, so the load
generator takes little of the cores the server and PostgreSQL need; it runs pinned to the last core
(`taskset`) and its CPU share is reported. Without it,
`python -m benchmarks.api_load URL CONNECTIONS SECONDS` runs a keep-alive HTTP/1.1 client on uvloop (one
coroutine per connection, latency of every request) and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from benchmarks.infra import ARRIVAL, DEPARTURE, percentile

BODY = json.dumps(
    {
        "departureAirport": DEPARTURE,
        "arrivalAirport": ARRIVAL,
        "departureDateTime": "2023-09-01T08:00:00.000Z",
        "arrivalDateTime": "2023-09-01T09:15:00.000Z",
    },
    separators=(",", ":"),
)


@dataclass
class LoadResult:
    tool: str
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    loader_cpu_share: float = float("nan")  # CPU seconds of the load generator per second (1.0 = a core)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_LUA = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, connections: int, seconds: int, workdir: Path) -> LoadResult:
    script = workdir / "post.lua"
    script.write_text(_LUA)
    # wrk on one thread, pinned to the last core: it takes its own slice of one core, never the server's
    # whole machine. Its CPU share (of one core) is reported from the children's rusage.
    pin = ["taskset", "-c", str((os.cpu_count() or 1) - 1)] if shutil.which("taskset") else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [
            *pin,
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = proc.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if proc.returncode != 0 or not (rps and total and p50 and p99):
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-1500:]} {proc.stderr[-500:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = int(total.group(1))
    return LoadResult(
        tool="wrk",
        requests=requests,
        errors=errors,
        seconds=float(seconds),
        requests_per_s=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        loader_cpu_share=cpu / seconds,
    )


def run_python(url: str, connections: int, seconds: int) -> LoadResult:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.api_load", url, str(connections), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-1500:]}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def run_load(url: str, connections: int, seconds: int, workdir: Path) -> LoadResult:
    if wrk_available():
        return run_wrk(url, connections, seconds, workdir)
    return run_python(url, connections, seconds)


# -- the asyncio load generator (fallback) ----------------------------------------------------------


async def _connection(host: str, port: int, path: str, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    body = BODY.encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    errors = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.startswith(b"HTTP/1.1 201"):
                errors += 1
    finally:
        writer.close()
    return errors


async def _generate(url: str, connections: int, seconds: int) -> LoadResult:
    parts = urllib.parse.urlsplit(url)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    errors = await asyncio.gather(
        *(
            _connection(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, deadline, latencies)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        tool="python-asyncio",
        requests=len(latencies),
        errors=sum(errors),
        seconds=elapsed,
        requests_per_s=len(latencies) / elapsed,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
    )


def main() -> None:
    url, connections, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        import uvloop

        result = uvloop.run(_generate(url, connections, seconds))
    except ImportError:  # pragma: no cover
        result = asyncio.run(_generate(url, connections, seconds))
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
