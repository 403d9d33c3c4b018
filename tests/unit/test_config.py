"""Settings: environment first, then the running local stack, else a clear error."""

from __future__ import annotations

import json
import os
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
        ("TXOUTBOX_BATCH_SIZE", "many", "whole number"),
        ("TXOUTBOX_BATCH_SIZE", "0", "at least 1"),
        ("TXOUTBOX_LEASE_SECONDS", "-1", "must not be negative"),
        ("TXOUTBOX_POLL_INTERVAL", "soon", "number"),
    ],
)
def test_bad_tuning_values_are_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name}.*{message}"):
        RelaySettings.from_env({name: value})
