"""The migrations produce the schema the code expects, and every named query runs against it."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.postgres import LocalPostgres
from txoutbox import queries
from txoutbox.migrate import apply_migrations, pending, resolve_components

NAMED_QUERIES = sorted(
    name
    for name, value in vars(queries).items()
    if name.isupper()
    and isinstance(value, str)
    and value.lstrip().split(" ", 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}
)


def test_every_named_query_prepares(conn: psycopg.Connection[Any]) -> None:
    assert len(NAMED_QUERIES) > 20
    for name in NAMED_QUERIES:
        sql, _ = queries.as_positional(getattr(queries, name))
        conn.execute(f"PREPARE q_{name.lower()} AS {sql}")


def test_migrations_are_all_applied_and_idempotent(database_url: str) -> None:
    components = resolve_components(None)
    assert pending(database_url, components) == []
    assert apply_migrations(database_url, components) == []


def _dump(pg: LocalPostgres, url: str) -> str:
    out = subprocess.run(
        [str(pg.bin_path() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def test_migrations_equal_the_schema_snapshot(postgres: LocalPostgres, database_url: str) -> None:
    """Applying every migration from scratch gives exactly the tables, columns and indexes the code uses."""
    fresh = postgres.ensure_database(f"s_{uuid.uuid4().hex[:12]}")
    apply_migrations(fresh, resolve_components(None))
    dump = _dump(postgres, fresh)
    snapshot = Path(__file__).with_name("schema_snapshot.sql")
    if os.environ.get("UPDATE_SCHEMA_SNAPSHOT"):
        snapshot.write_text(dump)
    assert dump == snapshot.read_text(), "schema differs from tests/integration/schema_snapshot.sql"
    for fragment in [
        "CREATE TABLE txoutbox.outbox",
        "event_id uuid NOT NULL",
        "next_attempt_at timestamp with time zone",
        "locked_until timestamp with time zone",
        "CREATE TABLE txoutbox.dead_letters",
        "CREATE TABLE txoutbox.inbox",
        "CREATE TABLE public.flights",
        "CREATE TABLE public.payments",
        "CREATE TABLE txoutbox.relays",
        "CREATE TABLE txoutbox.alerts",
        "outbox_aggregate_idx",
    ]:
        assert fragment in dump, fragment
    assert dump == _dump(postgres, database_url)


def test_changed_migration_is_refused(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from txoutbox import migrate
    from txoutbox.errors import MigrationError

    real = migrate.load_migrations

    def edited(component: str, package: str) -> list[migrate.Migration]:
        return [replace(m, sql=m.sql + "\n-- edited") for m in real(component, package)]

    monkeypatch.setattr(migrate, "load_migrations", edited)
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate.apply_migrations(database_url, {"flights": "flights.migrations"})


def test_migrate_waits_a_bounded_time_for_the_lock(database_url: str) -> None:
    """A migration holding the lock (or a stuck one) makes another run stop with one sentence, not hang."""
    import time

    from txoutbox import migrate
    from txoutbox.errors import MigrationError

    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"held the migration lock for over 0\.5 s"):
            migrate.apply_migrations(database_url, lock_timeout=0.5)
        assert time.monotonic() - started < 30
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK_KEY,))
    assert migrate.apply_migrations(database_url, lock_timeout=0.5) == []  # free again: nothing to apply


def test_apps_register_their_migrations_by_entry_point() -> None:
    """The library names none of its applications: flights and payments come from `txoutbox.migrations`."""
    from txoutbox.errors import MigrationError

    assert list(resolve_components(None)) == ["txoutbox", "flights", "payments"]
    assert resolve_components(["payments"]) == {"payments": "payments.migrations"}
    with pytest.raises(MigrationError, match=r"component 'hotels' \(known: txoutbox, flights"):
        resolve_components(["hotels"])
