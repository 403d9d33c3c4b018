"""Settings: environment first, then the running local stack, else a clear error."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from txoutbox.config import RelaySettings, Settings
from txoutbox.errors import ConfigurationError


def test_no_configuration_and_no_stack_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="txoutbox up"):
        Settings.from_env({"TXOUTBOX_HOME": str(tmp_path)})


def test_running_stack_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "database_url": "postgresql://x/db",
                "sqs_queue_url": "http://q",
                "sqs_dlq_url": "http://d",
                "sqs_endpoint_url": "http://e",
                "fault_url": "http://f",
                "aws_region": "eu-west-1",
            }
        )
    )
    settings = Settings.from_env({"TXOUTBOX_HOME": str(tmp_path)}, need_sqs=True)
    assert (settings.database_url, settings.sqs_queue_url, settings.local_stack) == (
        "postgresql://x/db",
        "http://q",
        True,
    )


def test_stack_file_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"pid": 2**22 + 12345, "database_url": "postgresql://x/db"})
    )
    with pytest.raises(ConfigurationError):
        Settings.from_env({"TXOUTBOX_HOME": str(tmp_path)})


def test_environment_points_at_real_infrastructure(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "TXOUTBOX_HOME": str(tmp_path),
            "DATABASE_URL": "postgresql://aurora/db",
            "SQS_QUEUE_URL": "https://sqs.eu-central-1.amazonaws.com/1/flightQueue.fifo",
            "AWS_REGION": "eu-central-1",
        },
        need_sqs=True,
    )
    assert (
        settings.local_stack is False and settings.fault_url is None and settings.aws_region == "eu-central-1"
    )
    assert Settings.from_env({"TXOUTBOX_HOME": str(tmp_path), "PGHOST": "aurora"}).database_url == ""


def test_missing_queue_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SQS_QUEUE_URL"):
        Settings.from_env(
            {"TXOUTBOX_HOME": str(tmp_path), "DATABASE_URL": "postgresql://x/db"}, need_sqs=True
        )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TXOUTBOX_BATCH_SIZE", "many", "whole number from 1 to 10000, got 'many'"),
        ("TXOUTBOX_BATCH_SIZE", "0", "whole number from 1 to 10000, got '0'"),
        ("TXOUTBOX_BATCH_SIZE", "10001", "whole number from 1 to 10000"),
        ("TXOUTBOX_WORKERS", "0", "whole number from 1 to 64"),
        ("TXOUTBOX_MAX_IN_FLIGHT", "-3", "whole number from 1 to 1000"),
        ("TXOUTBOX_MAX_ATTEMPTS", "0", "whole number from 1 to 1000"),
        ("TXOUTBOX_MAX_MESSAGE_BYTES", "10", "whole number from 1024 to 1048576"),
        ("TXOUTBOX_METRICS_PORT", "70000", "whole number from 0 to 65535"),
        ("TXOUTBOX_LEASE_SECONDS", "-1", "greater than 0 and at most 86400, got '-1'"),
        ("TXOUTBOX_LEASE_SECONDS", "0", "greater than 0 and at most 86400"),
        ("TXOUTBOX_LEASE_SECONDS", "nan", "greater than 0 and at most 86400"),
        ("TXOUTBOX_LEASE_SECONDS", "inf", "greater than 0 and at most 86400"),
        ("TXOUTBOX_LEASE_SECONDS", "1e400", "greater than 0 and at most 86400"),
        ("TXOUTBOX_POLL_INTERVAL", "soon", "number of seconds greater than 0"),
        ("TXOUTBOX_POLL_INTERVAL", "0", "greater than 0 and at most 3600"),
        ("TXOUTBOX_POLL_INTERVAL", "-inf", "greater than 0 and at most 3600"),
        ("TXOUTBOX_RETRY_BASE_SECONDS", "0", "greater than 0"),
        ("TXOUTBOX_RETRY_CAP_SECONDS", "NaN", "greater than 0"),
        ("TXOUTBOX_PROBE_BASE_SECONDS", "0", "greater than 0"),
        ("TXOUTBOX_PROBE_CAP_SECONDS", "inf", "greater than 0"),
        ("TXOUTBOX_HEARTBEAT_SECONDS", "0", "greater than 0"),
        ("TXOUTBOX_SHUTDOWN_TIMEOUT", "0", "greater than 0"),
        ("HEALTH_DEGRADED_AFTER_SECONDS", "-1", "at least 0 and at most 86400"),
        ("HEALTH_DEGRADED_AFTER_SECONDS", "nan", "at least 0 and at most 86400"),
        ("TXOUTBOX_RETRY_CAP_SECONDS", "0.5", "at least TXOUTBOX_RETRY_BASE_SECONDS"),
        ("ALERT_WEBHOOK_URL", "ftp://x", "http:// or https:// URL"),
    ],
)
def test_bad_tuning_values_are_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} .*{re.escape(message)}"):
        RelaySettings.from_env({name: value})


def test_values_in_range_are_accepted() -> None:
    relay = RelaySettings.from_env(
        {
            "TXOUTBOX_LEASE_SECONDS": "0.5",
            "TXOUTBOX_POLL_INTERVAL": "3600",
            "TXOUTBOX_BATCH_SIZE": "10000",
            "HEALTH_DEGRADED_AFTER_SECONDS": "0",
            "TXOUTBOX_METRICS_PORT": "0",
        }
    )
    assert (relay.lease_seconds, relay.poll_interval, relay.batch_size) == (0.5, 3600, 10000)
    assert relay.degraded_after_seconds == 0 and relay.metrics_port == 0


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pa%zz@127.0.0.1/db",  # a malformed percent-escape in the password
        "host=db password=pa%zz oops",  # key=value without "="
        "postgresql://u:pa%zz@127.0.0.1:99999/db",
    ],
)
def test_malformed_database_url_is_one_sentence_without_the_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"TXOUTBOX_HOME": str(tmp_path), "DATABASE_URL": url})
    message = str(caught.value)
    assert message.startswith("DATABASE_URL ") and "pa%zz" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("name", ["SQS_QUEUE_URL", "SQS_DLQ_URL", "SQS_ENDPOINT_URL"])
def test_queue_urls_must_be_http(tmp_path: Path, name: str) -> None:
    env = {"TXOUTBOX_HOME": str(tmp_path), "DATABASE_URL": "postgresql://x/db", name: "flightQueue.fifo"}
    with pytest.raises(ConfigurationError, match=f"^{name} must be an http"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:pa%zz@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db"),
        ("postgresql://u:p@ss@h/db and x@y", "postgresql://u:***@h/db and x@y"),
        ("host=h password=s3cret user=u", "host=h password=*** user=u"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        (
            "postgresql://h/db?password=s3cret&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_hides_passwords(text: str, expected: str) -> None:
    from txoutbox.redact import redact

    assert redact(text) == expected


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_never_show_a_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    import logging

    from txoutbox import logs

    monkeypatch.setenv("LOG_FORMAT", log_format)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure("INFO")
    try:
        try:
            raise ValueError("cannot use postgresql://app:hunter2@db/flights")
        except ValueError:
            logging.getLogger("test").exception("connecting to %s failed", "host=db password=hunter2")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    out = capsys.readouterr().out
    assert "hunter2" not in out and "postgresql://app:***@db/flights" in out and "password=***" in out
