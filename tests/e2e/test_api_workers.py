"""`txoutbox api --workers N`: the connections are spread over the workers, a dead worker is replaced, and
SIGTERM stops them all (flights.workers)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.process import children
from devstack.sqs import free_port
from tests.helpers import poll, start_service, tcp_sockets
from txoutbox.config import Settings
from txoutbox.processes import process_alive


def _workers(server: Any) -> list[int]:
    """The supervisor's live worker processes (not multiprocessing's resource tracker)."""

    def is_worker(pid: int) -> bool:
        try:
            return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    return [pid for pid in children(server.pid) if process_alive(pid) and is_worker(pid)]


def _connections_held(pid: int, port: int, state: str = "01") -> int:
    """TCP sockets on local `port` in `state` (01 established, 0A listening) that `pid` holds (its fds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return sum(1 for _, inode in tcp_sockets(port, state) if inode in inodes)


@pytest.fixture
def api(settings: Settings, tmp_path: Any) -> Iterator[tuple[Any, int]]:
    port = free_port()
    server = start_service(
        settings, "api", "--port", str(port), "--workers", "2", log_path=tmp_path / "api.log"
    )
    try:
        assert poll(lambda: _answers(port), 60), (tmp_path / "api.log").read_text()
        # both listening (the first to listen answers the check above)
        assert poll(lambda: [_connections_held(w, port, "0A") for w in _workers(server)] == [1, 1], 30)
        yield server, port
    finally:
        workers = _workers(server) if server.poll() is None else []
        if server.poll() is None:
            server.kill()
            server.wait(10)
        for pid in workers:  # a killed supervisor leaves its workers behind
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_connections_opened_at_once_are_spread_over_the_workers(api: tuple[Any, int]) -> None:
    server, port = api
    # 16 keep-alive connections opened together, as a load balancer or a load generator does. On one shared
    # socket, the worker that is idle accepts them all (two workers booked no faster than one).
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    try:
        for sock in sockets:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in sockets:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        held = [_connections_held(w, port) for w in _workers(server)]
    finally:
        for sock in sockets:
            sock.close()
    assert sum(held) == 16
    assert min(held) > 0, f"connections per worker: {held}"


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(api: tuple[Any, int]) -> None:
    server, port = api
    first, _ = _workers(server)
    os.kill(first, signal.SIGKILL)
    assert poll(lambda: len(_workers(server)) == 2 and first not in _workers(server), 20)
    assert poll(lambda: _answers(port), 20)
    workers = _workers(server)
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert poll(lambda: not any(process_alive(pid) for pid in workers), 10)
    assert not _answers(port)
