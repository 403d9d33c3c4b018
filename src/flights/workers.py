"""`txoutbox api --workers N`: N server processes, each listening on the same port with a socket of its own
(SO_REUSEPORT), so the kernel spreads the connections over them.

uvicorn's own `workers` share one listening socket: whichever process is idle accepts. A client that opens
its keep-alive connections at once (a load balancer, wrk) lands them all on one process while the others
idle (measured: 32 connections, 2 workers, 8 s of load: one worker used 7.7 s of CPU, the other 0.01 s,
and two workers booked no faster than one).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

from uvicorn.config import STARTUP_FAILURE  # the exit status of a worker whose app failed to start

log = logging.getLogger("flights")

# A worker that fails on its own (an error, not a signal) this soon after its start, or reports a failed
# start-up, is not restarted: it would fail the same way again. One killed by a signal always is.
MIN_WORKER_LIFE_SECONDS = 5.0
STOP_SECONDS = 15.0  # after SIGTERM, how long a worker may finish its requests before it is killed


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) that other processes of this user may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _serve(config: dict[str, Any]) -> None:
    """One worker: the app from the environment, on a socket of its own."""
    import uvicorn

    from txoutbox import logs

    logs.configure()
    sock = listening_socket(config["host"], config["port"])
    server = uvicorn.Server(uvicorn.Config("flights.app:app_from_env", factory=True, **config))
    server.run(sockets=[sock])


class Workers:
    """The worker processes: started, restarted when one dies, stopped on SIGINT or SIGTERM."""

    def __init__(self, config: dict[str, Any], count: int) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._started: list[float] = []
        self._stop = threading.Event()
        self.count = count

    def _start(self, n: int) -> Any:
        proc = self._context.Process(target=_serve, args=(self._config,), name=f"api-worker-{n}")
        proc.start()
        return proc

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until a signal; the exit status (1 when a worker failed at start-up)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self._procs = [self._start(n) for n in range(self.count)]
        self._started = [time.monotonic()] * self.count
        status = 0
        while not self._stop.wait(0.5):
            for n, proc in enumerate(self._procs):
                if proc.is_alive():
                    continue
                code = proc.exitcode
                young = time.monotonic() - self._started[n] < MIN_WORKER_LIFE_SECONDS
                if code == STARTUP_FAILURE or (young and code is not None and code > 0):
                    log.error("API worker %d failed at start-up (status %s); stopping", n, code)
                    status = 1
                    self._stop.set()
                    break
                log.warning("API worker %d exited (status %s); starting another", n, code)
                self._procs[n], self._started[n] = self._start(n), time.monotonic()
        self._stop_all()
        return status

    def _stop_all(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in hand
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
