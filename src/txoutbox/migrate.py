"""Versioned SQL migrations: numbered `.sql` files per component, applied once each, in order.

Each component keeps its files in a package folder `NNNN_name.sql`: the library's own are in
`txoutbox.migrations`; an application registers its package in the entry-point group `txoutbox.migrations`
(`flights = "flights.migrations"` in its pyproject), so the library never names its applications.
Applied versions are recorded with a checksum in `txoutbox.schema_migrations`; a changed file that was
already applied is an error, not a silent skip. The whole run holds an advisory lock, so several processes
starting together (two API tasks) are safe; a run that cannot get the lock within `lock_timeout` seconds
stops with a MigrationError instead of hanging.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from dataclasses import dataclass
from importlib import metadata, resources

import psycopg

from txoutbox.errors import MigrationError

MIGRATION_LOCK_KEY = 0x7478_6D69_6772  # "txmigr"
ENTRY_POINT_GROUP = "txoutbox.migrations"
LIBRARY_COMPONENT = ("txoutbox", "txoutbox.migrations")
LOCK_TIMEOUT_SECONDS = (
    60.0  # long enough for another process's migrations, short enough to notice a stuck one
)
_LOCK_POLL_SECONDS = 0.2
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS txoutbox;
CREATE TABLE IF NOT EXISTS txoutbox.schema_migrations (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.component} {self.version:04d}_{self.name}"


def load_migrations(component: str, package: str) -> list[Migration]:
    """The migrations of one component, in version order."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(component, int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise MigrationError(
                f"component {component!r} has two migrations numbered {after.version:04d} "
                f"({before.name} and {after.name}): renumber one"
            )
    return found


def installed_components() -> dict[str, str]:
    """Component name -> migrations package: the library first, then the registered apps by name."""
    found = {LIBRARY_COMPONENT[0]: LIBRARY_COMPONENT[1]}
    for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        found.setdefault(entry.name, entry.module)  # the package itself, not loaded: only its files are read
    return found


def resolve_components(names: list[str] | None) -> dict[str, str]:
    """Pick components by name (every installed one when `names` is empty)."""
    known = installed_components()
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MigrationError(f"unknown migration component {unknown[0]!r} (known: {', '.join(known)})")
    return {n: known[n] for n in names}


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[tuple[str, int], str]:
    rows = conn.execute("SELECT component, version, checksum FROM txoutbox.schema_migrations").fetchall()
    return {(str(c), int(str(v))): str(s) for c, v, s in rows}


def pending(conninfo: str, components: dict[str, str] | None = None) -> list[Migration]:
    """Migrations not yet applied to the database."""
    components = components or installed_components()
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('txoutbox.schema_migrations') IS NOT NULL").fetchone()
        applied = _applied(conn) if exists and exists[0] else {}
    todo = []
    for component, package in components.items():
        todo += [m for m in load_migrations(component, package) if (component, m.version) not in applied]
    return todo


def _lock(conn: psycopg.Connection[tuple[object, ...]], timeout: float) -> None:
    """Take the migration lock, polling with pg_try_advisory_lock so the wait is bounded."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another process has held the migration lock for over {timeout:g} s; wait for it to "
                "finish (or stop it) and run `txoutbox migrate` again"
            )
        time.sleep(_LOCK_POLL_SECONDS)


def apply_migrations(
    conninfo: str, components: dict[str, str] | None = None, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS
) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return what was applied."""
    components = components or installed_components()
    done: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        _lock(conn, lock_timeout)
        try:
            conn.execute(_BOOTSTRAP)
            applied = _applied(conn)
            for component, package in components.items():
                for migration in load_migrations(component, package):
                    key = (component, migration.version)
                    if key in applied:
                        if applied[key] != migration.checksum:
                            raise MigrationError(
                                f"migration {migration.label} was changed after it was applied; "
                                "add a new migration instead of editing an applied one"
                            )
                        continue
                    with conn.transaction():
                        conn.execute(migration.sql)  # a trusted file from the package
                        conn.execute(
                            "INSERT INTO txoutbox.schema_migrations (component, version, name, checksum) "
                            "VALUES (%s, %s, %s, %s)",
                            (component, migration.version, migration.name, migration.checksum),
                        )
                    done.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done
