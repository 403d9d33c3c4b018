"""The Dockerfile (which cannot be built here: no Docker engine), read as text, and the ECS commands
checked against the real `txoutbox` command line."""

from __future__ import annotations

import itertools
import json
import re
import tomllib

import click
import pytest

from tests.infra.conftest import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (REPO_ROOT / ".dockerignore").read_text().splitlines()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def stages() -> list[list[str]]:
    result: list[list[str]] = []
    for line in INSTRUCTIONS:
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def exec_form(instruction: str) -> list[str]:
    for line in INSTRUCTIONS:
        if line.upper().startswith(instruction + " "):
            value: list[str] = json.loads(line.split(" ", 1)[1])
            return value
    raise AssertionError(f"no {instruction}")


def test_multi_stage_on_a_pinned_slim_python() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", DOCKERFILE, re.MULTILINE)
    builder, runtime = stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE}"


def test_builder_installs_the_locked_runtime_dependencies_only() -> None:
    builder = " ".join(stages()[0])
    assert 'pip install "uv==0.13.9"' in builder
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in builder
    syncs = [line for line in stages()[0] if "uv sync" in line]
    assert len(syncs) == 2
    for sync in syncs:
        for flag in ("--frozen", "--no-dev", "--no-default-groups"):
            assert flag in sync
        for flag in ("--extra", "--all-extras", "--all-groups", "--group"):
            assert flag not in sync
    assert "--no-editable" in syncs[-1]
    # the extras stay out of the image: the embedded PostgreSQL of devstack is for laptops
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any("pgserver" in dep for dep in extras["devstack"])


def test_runtime_stage_has_only_the_venv_and_runs_as_non_root() -> None:
    runtime = stages()[1]
    copies = [line for line in runtime if line.upper().startswith("COPY ")]
    assert copies == ["COPY --from=builder /opt/venv /opt/venv"]
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    text = " ".join(runtime)
    assert "PATH=/opt/venv/bin:$PATH" in text
    for tool in ("apt-get install", "gcc", "build-essential", "uv sync"):
        assert tool not in text


def test_entrypoint_is_txoutbox_and_the_default_command_serves_the_api() -> None:
    assert exec_form("ENTRYPOINT") == ["txoutbox"]
    assert exec_form("CMD") == ["api", "--host", "0.0.0.0", "--port", "8080"]


def test_dockerignore_keeps_only_what_the_build_needs() -> None:
    assert DOCKERIGNORE[DOCKERIGNORE.index("*") :].count("*") == 1
    allowed = {line[1:] for line in DOCKERIGNORE if line.startswith("!")}
    assert allowed == {"Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "src"}
    copied = {
        src
        for line in INSTRUCTIONS
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    }
    assert copied <= allowed


@pytest.mark.parametrize(
    "args",
    [
        ["api", "--host", "0.0.0.0", "--port", "8080", "--migrate"],  # the api service
        ["relay"],
        ["payments"],
        ["migrate"],
        ["outbox", "list"],  # one-off tasks of the README's walkthrough
        ["flights", "list"],
        ["payments", "list"],
        ["status"],
        ["api", "--host", "0.0.0.0", "--port", "8080"],  # the image's CMD
    ],
)
def test_the_container_commands_are_valid_txoutbox_command_lines(args: list[str]) -> None:
    """Parse (without running) what ECS passes to the ENTRYPOINT `txoutbox`: subcommands, then options."""
    from txoutbox.cli.main import cli

    command: click.Command = cli
    rest = list(args)
    path: list[str] = []
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    assert path == list(itertools.takewhile(lambda a: not a.startswith("-"), args)), f"unknown: {args}"
    command.make_context(" ".join(["txoutbox", *path]), rest)  # raises click.UsageError on a bad option
