"""A whole local stack (`txoutbox up`) as a subprocess, with its output captured line by line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.sqs import free_port
from tests.helpers import poll

BIN = Path(sys.executable).parent


class Stack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.sqs_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SQS_", "PG"))},
            "TXOUTBOX_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
        }
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.api = f"http://127.0.0.1:{self.port}"

    def start(self, *args: str, **env: str) -> Stack:
        """`txoutbox up ARGS` on this stack's ports (the operator console off unless ARGS turn it on)."""
        self.proc = subprocess.Popen(
            [
                str(BIN / "txoutbox"),
                "up",
                "--port",
                str(self.port),
                "--sqs-port",
                str(self.sqs_port),
                "--metrics-port",
                str(self.metrics_port),
                "--console-port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**self.env, **env},
        )
        threading.Thread(target=self._read, daemon=True).start()
        assert poll(
            lambda: any("ready in" in line for line in self.lines) or self.proc.poll() is not None, 60
        ), "stack did not start:\n" + self.output()
        assert self.proc.poll() is None, self.output()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float, start: int = 0) -> str | None:
        found = poll(lambda: next((line for line in self.lines[start:] if text in line), None), timeout)
        return found  # type: ignore[no-any-return]

    def cli(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "txoutbox"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            input=input,
        )
        if check:
            assert result.returncode == 0, f"txoutbox {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    def book(self, client: httpx.Client, day: int = 1, departure: str = "Paris") -> dict[str, Any]:
        response = client.post(
            f"{self.api}/api/flights",
            json={
                "departureAirport": departure,
                "arrivalAirport": "London",
                "departureDateTime": f"2023-09-{day:02d}T08:00:00.000Z",
                "arrivalDateTime": f"2023-09-{day:02d}T08:15:00.000Z",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def stack_file(self) -> dict[str, Any]:
        """The running stack's `stack.json` (addresses and pids)."""
        return json.loads((self.home / "stack.json").read_text())  # type: ignore[no-any-return]

    def kill(self) -> None:
        """SIGKILL `up` itself: it gets no chance to stop anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def path_without_node(folder: Path) -> str:
    """A PATH with every program of this one but Node's (symlinks in `folder`): a machine without Node."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            target = folder / program.name
            if program.name not in ("node", "nodejs", "npm", "npx", "corepack") and not target.exists():
                target.symlink_to(program)
    return str(folder)


@pytest.fixture
def stack() -> Iterator[Stack]:
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as another user when we are root and needs
    # to traverse the folders above its data, which pytest (of this or a concurrent session) resets to 0700.
    folder = Path(tempfile.mkdtemp(prefix="txo-e2e-"))
    s = Stack(folder / "home")
    yield s
    s.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def wait(seconds: float) -> None:
    """Let time pass for the system under test (not a wait for a result: those are polls)."""
    time.sleep(seconds)
