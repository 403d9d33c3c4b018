"""Operator commands against a real database: clear lines, --json, non-zero exit on a bad id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import seed_events, service_env
from txoutbox.config import Settings

TXOUTBOX = str(Path(sys.executable).parent / "txoutbox")


@pytest.fixture
def run(settings: Settings) -> Any:
    def run(*args: str, code: int = 0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [TXOUTBOX, *args],
            capture_output=True,
            text=True,
            env=service_env(settings),
            input=input,
            timeout=60,
        )
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    return run


def _dead_letter(database_url: str, aggregate: str = "X") -> int:
    seed_events(database_url, {aggregate: 2})
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "UPDATE txoutbox.outbox SET locked_by = 'r' "
            "WHERE id = (SELECT min(id) FROM txoutbox.outbox) RETURNING id"
        ).fetchone()
        assert row is not None
        conn.execute("SELECT 1 FROM txoutbox.outbox")
        from txoutbox import queries

        conn.execute(
            queries.DEAD_LETTER, {"ids": [row[0]], "reasons": ["MessageTooLong: too big"], "relay_id": "r"}
        )
        return int(row[0])


def test_empty_tables_print_empty_json_arrays(run: Any) -> None:
    for command in (
        ["outbox", "list"],
        ["flights", "list"],
        ["payments", "list"],
        ["dead-letters", "list"],
        ["outbox", "list", "--stuck"],
    ):
        assert json.loads(run(*command, "--json").stdout) == []
    assert "the outbox is empty" in run("outbox", "list").stdout


def test_status_reports_backlog_dead_letters_and_circuit(run: Any, settings: Settings) -> None:
    _dead_letter(settings.database_url)
    status = json.loads(run("status", "--json").stdout)
    assert status["outbox"]["backlog"] == 1 and status["outbox"]["dead_letters"] == 1
    assert status["outbox"]["circuit"] == "unknown"
    text = run("status").stdout
    assert "1 events waiting" in text and "dead letters  1" in text


def test_dead_letter_commands(run: Any, settings: Settings) -> None:
    dead_id = _dead_letter(settings.database_url)
    listed = json.loads(run("dead-letters", "list", "--json").stdout)
    assert [(d["id"], d["reason"]) for d in listed] == [(dead_id, "MessageTooLong: too big")]
    shown = json.loads(run("dead-letters", "show", str(dead_id), "--json").stdout)
    assert json.loads(shown["payload"])["seq"] == 0
    stuck = json.loads(run("outbox", "list", "--stuck", "--json").stdout)
    assert [s["state"] for s in stuck] == ["held: earlier event dead-lettered"]

    assert "no dead letter with id 999" in run("dead-letters", "show", "999", code=1).stderr
    assert "no dead letter with id 999" in run("dead-letters", "retry", "999", code=1).stderr
    assert "no dead letter with id 999" in run("dead-letters", "discard", "999", "--yes", code=1).stderr
    assert "give a dead letter id or --all" in run("dead-letters", "retry", code=2).stderr

    declined = run("dead-letters", "discard", str(dead_id), input="n\n", code=1)
    assert "aborted" in declined.stderr
    assert len(json.loads(run("dead-letters", "list", "--json").stdout)) == 1

    assert json.loads(run("dead-letters", "retry", str(dead_id), "--json").stdout) == {"requeued": [dead_id]}
    assert json.loads(run("outbox", "list", "--json").stdout)[0]["id"] == dead_id

    second = _dead_letter(settings.database_url, "Y")
    out = run("dead-letters", "discard", str(second), "--yes").stdout
    assert f"dead letter {second} discarded" in out
    assert json.loads(run("dead-letters", "list", "--json").stdout) == []


def test_outbox_retry(run: Any, settings: Settings) -> None:
    seed_events(settings.database_url, {"R": 1})
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "UPDATE txoutbox.outbox SET next_attempt_at = now() + interval '1 hour', attempts = 2 "
            "RETURNING id"
        ).fetchone()
    assert row is not None
    assert "no event with id 424242 in the outbox" in run("outbox", "retry", "424242", code=1).stderr
    assert run("outbox", "retry", str(row[0])).stdout.strip() == f"1 event(s) due now: {row[0]}"
    assert (
        run("outbox", "retry", "--all", "--json").stdout.strip().replace(" ", "").replace("\n", "")
        == '{"due_now":[]}'
    )


def test_fault_switch_refuses_real_aws(run: Any) -> None:
    result = run("fault", "sqs", "deny", code=1)
    assert "only on the local stack" in result.stderr and "nothing was changed" in result.stderr


def test_unreachable_database_is_one_line(run: Any, settings: Settings) -> None:
    result = subprocess.run(
        [TXOUTBOX, "outbox", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**service_env(settings), "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
    )
    assert result.returncode == 1 and result.stderr.startswith("error: cannot reach the database")
    assert "Traceback" not in result.stderr


def _txoutbox(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TXOUTBOX, *args], capture_output=True, text=True, timeout=60, env={**service_env(settings), **env}
    )


BAD_URL = "postgresql://u:pa%zz@127.0.0.1/db"  # "%zz" is not a percent-escape: libpq cannot parse it


def _txoutbox_unconfigured(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command with no local stack and nothing listening: for errors found before any connection."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("SQS_", "PG", "DATABASE_URL", "TXOUTBOX_"))
    }
    base.update(
        TXOUTBOX_HOME=str(Path(sys.prefix) / "no-stack"),
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/x",
        SQS_QUEUE_URL="http://127.0.0.1:1/000000000000/q.fifo",
    )
    return subprocess.run([TXOUTBOX, *args], capture_output=True, text=True, timeout=60, env={**base, **env})


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["relay"],
        ["migrate"],
        ["migrate", "--dry-run"],
        ["outbox", "list"],
        ["dead-letters", "list"],
        ["flights", "list"],
        ["payments"],
        ["payments", "list"],
        ["api", "--port", "1"],
    ],
)
def test_malformed_database_url_is_one_sentence_without_the_password(command: list[str]) -> None:
    result = _txoutbox_unconfigured(*command, DATABASE_URL=BAD_URL)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        'error: DATABASE_URL is not a valid PostgreSQL connection string (invalid percent-encoded token: "…")'
    ]
    assert "pa%zz" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("TXOUTBOX_LEASE_SECONDS", "0"), ("TXOUTBOX_POLL_INTERVAL", "nan"), ("TXOUTBOX_BATCH_SIZE", "-1")],
)
def test_bad_setting_stops_the_relay_in_one_sentence(name: str, value: str) -> None:
    result = _txoutbox_unconfigured("relay", **{name: value})
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} must be a"), result.stderr


def test_connection_error_never_shows_the_password(settings: Settings) -> None:
    result = _txoutbox(
        settings, "status", DATABASE_URL="host=127.0.0.1 port=1 password=s3cret connect_timeout=2"
    )
    assert result.returncode == 1 and result.stderr.startswith("error: cannot reach the database")
    assert "s3cret" not in result.stdout + result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- plugins


def _install_plugin(site: Path, name: str, target: str) -> dict[str, str]:
    """A distribution on PYTHONPATH declaring one `txoutbox.cli` entry point (how any app registers)."""
    info = site / f"{name}_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[txoutbox.cli]\n{name} = {target}\n")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


def test_plugin_commands_run_as_before(run: Any) -> None:
    """`api`, `flights` and `payments` come from entry points, typed exactly as before."""
    for command in ("api", "flights", "payments"):
        assert run(command, "--help").stdout.startswith("Usage: txoutbox " + command)
    help_text = run("--help").stdout
    assert all(f"  {c} " in help_text for c in ("api", "flights", "payments", "status", "relay", "migrate"))


def test_a_broken_plugin_is_one_warning_and_the_core_still_works(settings: Settings, tmp_path: Path) -> None:
    env = _install_plugin(tmp_path, "broken", "no_such_module_xyz:command")
    listing = _txoutbox(settings, "--help", **env)
    assert listing.returncode == 0 and "  status " in listing.stdout and "  flights " in listing.stdout
    warnings = [line for line in listing.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: the command 'broken'"), listing.stderr
    assert "Traceback" not in listing.stderr

    status = _txoutbox(settings, "status", "--json", **env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "ok"
    assert "broken" not in status.stderr  # a command that is not run is not even imported

    used = _txoutbox(settings, "broken", **env)
    assert used.returncode != 0 and "Traceback" not in used.stderr
    assert "warning: the command 'broken'" in used.stderr


def test_a_plugin_cannot_replace_a_library_command(settings: Settings, tmp_path: Path) -> None:
    env = _install_plugin(tmp_path, "status", "flights.cli:flights")
    result = _txoutbox(settings, "status", "--json", **env)
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "ok"


def test_migrate_gives_up_on_a_held_lock_in_one_sentence(settings: Settings) -> None:
    from txoutbox.migrate import MIGRATION_LOCK_KEY

    with psycopg.connect(settings.database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        result = _txoutbox(settings, "migrate", "--lock-timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: another process has held the migration lock for over 0.5 s; wait for it to finish "
        "(or stop it) and run `txoutbox migrate` again"
    ]


@pytest.mark.parametrize(
    ("service", "change", "reason"),
    [
        (
            ["relay"],
            {"user": "no_such_role"},
            'role "no_such_role" does not exist',
        ),  # the server trusts passwords
        (["payments"], {"dbname": "no_such_db"}, 'database "no_such_db" does not exist'),
        (["api", "--port", "1"], {"user": "no_such_role"}, 'role "no_such_role" does not exist'),
    ],
)
def test_service_refused_by_the_database_stops_in_one_sentence(
    settings: Settings, service: list[str], change: dict[str, str], reason: str
) -> None:
    """Credentials or a database name no retry can fix: one sentence and exit 1, not a log line a second."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {**conninfo_to_dict(settings.database_url), "password": "s3cret-pw", **change}
    result = _txoutbox(settings, *service, DATABASE_URL=make_conninfo(**params))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the database refused the connection ("), lines
    assert reason in lines[0] and "s3cret-pw" not in result.stdout + result.stderr
