"""The service roles of the AWS deployment (infra/database/service_roles.sql, applied by the migration task's
program infra/database/apply_roles.py), run against the real PostgreSQL of the tests on a migrated database:
each role gets exactly its grants, every table of the schema is covered, the roles work for their service's
statements and are refused the others, and no password is ever sent in clear."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.infra.conftest import INFRA

# Roles are cluster-wide: the tests that create them share one worker.
pytestmark = pytest.mark.xdist_group("infra")

ROLES_SQL = (INFRA / "database" / "service_roles.sql").read_text()
PASSWORDS = {"txoutbox_api": "api-pw", "txoutbox_relay": "relay-pw", "txoutbox_payments": "payments-pw"}
# What each service needs, by table: the test's own statement of the intent (not read from the SQL).
EXPECTED = {
    "txoutbox_api": {
        "public.flights": {"SELECT", "INSERT"},
        "txoutbox.outbox": {"INSERT", "SELECT"},  # writes events; reads for /health
        "txoutbox.dead_letters": {"SELECT"},  # /health
        "txoutbox.relays": {"SELECT"},  # /health
        "txoutbox.aggregate_locks": {"SELECT", "INSERT", "UPDATE"},  # the writer's aggregate locks
        "txoutbox.idle_relays": {"SELECT"},  # the writer notifies only while a relay waits
    },
    "txoutbox_relay": {
        "txoutbox.outbox": {"SELECT", "UPDATE", "DELETE"},
        "txoutbox.dead_letters": {"SELECT", "INSERT"},
        "txoutbox.relays": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "txoutbox.alerts": {"SELECT", "UPDATE"},
        "txoutbox.published": {"SELECT", "INSERT"},
        "txoutbox.idle_relays": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "txoutbox.outbox_reinserts": {"SELECT"},  # every claim reads it (the low-water mark)
        "txoutbox.aggregate_locks": {"SELECT", "UPDATE", "DELETE"},  # prunes the lock rows writers leave
    },
    "txoutbox_payments": {
        "public.payments": {"SELECT", "INSERT"},
        "txoutbox.inbox": {"SELECT", "INSERT", "DELETE"},
    },
}
# Tables only the master user (migrations, retention maintenance) touches.
ADMIN_ONLY = {"txoutbox.schema_migrations"}


def load_apply_roles() -> Any:
    spec = importlib.util.spec_from_file_location("apply_roles", INFRA / "database" / "apply_roles.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tables(conn: psycopg.Connection[Any]) -> set[str]:
    """Every table of the schemas the app uses, partitions excluded (reached through their parent)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('public', 'txoutbox') AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    ).fetchall()
    return {r[0] for r in rows}


def grants_of(conn: psycopg.Connection[Any]) -> dict[str, dict[str, set[str]]]:
    rows = conn.execute(
        "SELECT grantee, table_schema || '.' || table_name, privilege_type "
        "FROM information_schema.role_table_grants WHERE grantee = ANY(%s)",
        (list(PASSWORDS),),
    ).fetchall()
    result: dict[str, dict[str, set[str]]] = {role: {} for role in PASSWORDS}
    for role, table, privilege in rows:
        result[role].setdefault(table, set()).add(privilege)
    return result


@pytest.fixture
def applied(database_url: str) -> str:
    load_apply_roles().apply_roles(database_url, ROLES_SQL, PASSWORDS)
    return database_url


def as_role(url: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, user=role, autocommit=True)


def test_each_role_has_exactly_the_grants_its_service_needs(applied: str) -> None:
    with psycopg.connect(applied) as conn:
        existing = tables(conn)
        expected = {
            role: {t: p for t, p in by_table.items() if t in existing} for role, by_table in EXPECTED.items()
        }
        assert grants_of(conn) == expected
        attributes = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = ANY(%s)",
            (list(PASSWORDS),),
        ).fetchall()
    assert sorted(attributes) == sorted((role, True, False, False, False) for role in PASSWORDS)


def test_every_table_is_granted_to_a_service_or_admin_only(applied: str) -> None:
    """A migration's new table must get its grants in service_roles.sql (or be declared admin-only here)."""
    with psycopg.connect(applied) as conn:
        granted = {t for by_table in grants_of(conn).values() for t in by_table}
        missing = tables(conn) - granted - ADMIN_ONLY
    assert not missing, (
        f"tables without a service grant in infra/database/service_roles.sql: {sorted(missing)}"
    )


def test_applying_again_converges_to_the_same_grants(applied: str) -> None:
    with psycopg.connect(applied, autocommit=True) as conn:
        conn.execute("GRANT ALL ON txoutbox.outbox, public.payments TO txoutbox_api")  # drift by hand
        conn.execute("ALTER ROLE txoutbox_relay CREATEDB")
    load_apply_roles().apply_roles(applied, ROLES_SQL, PASSWORDS)
    with psycopg.connect(applied) as conn:
        existing = tables(conn)
        assert grants_of(conn)["txoutbox_api"] == {
            t: p for t, p in EXPECTED["txoutbox_api"].items() if t in existing
        }
        assert conn.execute(
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'txoutbox_relay'"
        ).fetchone() == (False,)


def test_passwords_are_stored_as_scram_verifiers(applied: str) -> None:
    with psycopg.connect(applied) as conn:
        rows = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (list(PASSWORDS),)
        ).fetchall()
    assert len(rows) == 3
    for role, stored in rows:
        assert stored.startswith("SCRAM-SHA-256$4096:"), role
        assert PASSWORDS[role] not in stored


def test_the_roles_can_do_their_work_and_nothing_else(applied: str) -> None:
    from txoutbox import Event, add_event

    with as_role(applied, "txoutbox_api") as api:
        with api.transaction():
            api.execute(
                "INSERT INTO public.flights (departure_airport, arrival_airport, departure_date_time, "
                "arrival_date_time) VALUES ('Paris', 'London', now(), now() + interval '1 hour')"
            )
            add_event(api, Event("Flight", "1", "FlightBooked", {"id": 1}))
        with pytest.raises(errors.InsufficientPrivilege):
            api.execute("DELETE FROM txoutbox.outbox")
        with pytest.raises(errors.InsufficientPrivilege):
            api.execute("SELECT * FROM public.payments")
        with pytest.raises(errors.InsufficientPrivilege):
            api.execute("CREATE TABLE public.mine (id int)")
    with as_role(applied, "txoutbox_relay") as relay:
        [(event_id,)] = relay.execute("SELECT event_id FROM txoutbox.outbox").fetchall()
        relay.execute("UPDATE txoutbox.outbox SET locked_by = 'r1' WHERE event_id = %s", (event_id,))
        relay.execute("DELETE FROM txoutbox.outbox WHERE event_id = %s", (event_id,))
        with pytest.raises(errors.InsufficientPrivilege):
            relay.execute("SELECT * FROM public.flights")
        with pytest.raises(errors.InsufficientPrivilege):
            relay.execute("INSERT INTO txoutbox.inbox (consumer, event_id) VALUES ('x', gen_random_uuid())")
    with as_role(applied, "txoutbox_payments") as payments:
        payments.execute(
            "INSERT INTO txoutbox.inbox (consumer, event_id) VALUES ('payments', %s) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (event_id,),
        )
        payments.execute("INSERT INTO public.payments (event_id, flight_id) VALUES (%s, 1)", (event_id,))
        with pytest.raises(errors.InsufficientPrivilege):
            payments.execute("SELECT * FROM public.flights")
        with pytest.raises(errors.InsufficientPrivilege):
            payments.execute("SELECT * FROM txoutbox.outbox")


def test_the_program_refuses_to_run_without_every_password(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    env.update({"TXOUTBOX_ROLES_SQL": ROLES_SQL, "TXOUTBOX_API_PASSWORD": "x", "DATABASE_URL": database_url})
    out = subprocess.run(
        [sys.executable, "-c", (INFRA / "database" / "apply_roles.py").read_text()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "migration task: missing TXOUTBOX_RELAY_PASSWORD, TXOUTBOX_PAYMENTS_PASSWORD"
