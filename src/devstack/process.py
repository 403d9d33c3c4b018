"""Child processes of the local stack (and of the benchmarks): started in their own session, dying with the
process that started them, their output read line by line.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

PR_SET_PDEATHSIG = 1
# Looked up here, not between fork and exec, where an import could wait on a lock held by another thread.
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform == "linux" else None


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        # If the parent is SIGKILLed it cannot stop its children: the kernel sends them SIGTERM instead, so
        # none keeps a port. (Linux only; the signal follows the parent *thread*, hence Popen from the main
        # thread.) A parent already gone before prctl ran would never send it: check and stop now.
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Child:
    """A child process; its output goes to `on_line` (one call per line) and/or to the file `log_path`.

    `ready_line`: text whose first appearance in the output sets `ready` (and `ready_at`, monotonic time).
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        on_line: Callable[[str], None] | None = None,
        log_path: Path | None = None,
        ready_line: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._on_line = on_line
        self._ready_line = ready_line
        self._log: TextIO | None = log_path.open("w") if log_path else None
        direct = self._log is not None and on_line is None and ready_line is None
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=str(cwd) if cwd else None,
            stdout=self._log if direct else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only the parent, which stops its children in order
            preexec_fn=_die_with(os.getpid()),
        )
        self._pump: threading.Thread | None = None
        if direct:
            self.ready.set()
        else:
            self._pump = threading.Thread(target=self._copy, daemon=True)
            self._pump.start()
            if ready_line is None:
                self.ready.set()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.last_lines.append(line)
            if not self.ready.is_set() and self._ready_line and self._ready_line in line:
                self.ready_at = time.monotonic()
                self.ready.set()
            if self._log is not None:
                self._log.write(raw)
            if self._on_line is not None:
                self._on_line(line)
        if self._log is not None:
            self._log.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.proc.poll()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the ready line appeared (True) or the process ended or `timeout` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return self.ready.is_set()
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 25.0) -> int:
        """Send `sig`, wait up to `timeout` s, then SIGKILL; return the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self._on_line is not None:
                    self._on_line(f"did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        if self._pump is not None:
            self._pump.join(2)
        if self._log is not None:
            with contextlib.suppress(ValueError):
                self._log.flush()
        return self.proc.returncode


def children(pid: int) -> list[int]:
    """The direct children of a process, from /proc (PostgreSQL's backends are children of the
    postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def txoutbox_command(*args: str) -> list[str]:
    """The command line of `txoutbox ARGS` run by this interpreter."""
    return [sys.executable, "-m", "txoutbox", *args]
