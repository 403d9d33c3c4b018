"""The Dockerfile read as text (`make image` builds it for real with podman, as root: not part of the tests),
and the ECS commands checked against the real `txoutbox` command line."""

from __future__ import annotations

import itertools
import json
import re
import tomllib

import click
import pytest

from tests.infra.conftest import REPO_ROOT, load_app_module

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


def test_the_base_image_is_a_build_arg_pinned_by_digest_and_the_same_in_the_cdk_app() -> None:
    [default] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"docker\.io/library/debian:bookworm-slim@sha256:[0-9a-f]{64}", default)
    python, builder, runtime = stages()
    assert python[0] == "FROM ${BASE_IMAGE} AS python"
    assert builder[0] == "FROM python AS builder"
    assert runtime[0] == "FROM python"
    # Debian's Python, not a python: image; no documentation or apt lists kept
    install = " ".join(python)
    assert "apt-get install --yes --quiet --no-install-recommends python3 ca-certificates" in install
    assert "rm -rf /var/lib/apt/lists/*" in install
    load_app_module()  # puts infra/ on sys.path
    from stacks.aurora_stack import DEFAULT_BASE_IMAGE

    assert default == DEFAULT_BASE_IMAGE


def test_builder_installs_the_locked_runtime_dependencies_only() -> None:
    builder = " ".join(stages()[1])
    assert '/opt/uv/bin/pip install --quiet "uv==0.13.9"' in builder
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in builder
    assert "UV_PYTHON=/usr/bin/python3" in builder
    syncs = [line for line in stages()[1] if "uv sync" in line]
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


def test_a_build_ca_is_a_secret_of_the_builder_stage_only() -> None:
    """A proxy's CA bundle (as on the machine of `make image`) reaches PyPI downloads, never a layer."""
    python, builder, runtime = stages()
    downloads = [line for line in builder if "pip install" in line or "uv sync" in line]
    assert downloads
    for line in downloads:
        assert line.startswith("RUN --mount=type=secret,id=build-ca ")
    assert not [line for line in python + runtime if "build-ca" in line or "CA_SECRET" in line]
    assert not [line for line in INSTRUCTIONS if re.match(r"(ARG|ENV) .*(CERT|CA_BUNDLE)", line)]


def test_runtime_stage_has_only_the_venv_and_runs_as_non_root() -> None:
    runtime = stages()[2]
    copies = [line for line in runtime if line.upper().startswith("COPY ")]
    assert copies == ["COPY --from=builder /opt/venv /opt/venv"]
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    text = " ".join(runtime)
    assert "PATH=/opt/venv/bin:$PATH" in text
    for tool in ("apt-get install", "gcc", "build-essential", "uv sync", "pip install"):
        assert tool not in text


def test_the_rds_ca_volume_is_owned_by_the_app_user() -> None:
    """ECS gives a task volume the owner of the image's directory at its VOLUME path."""
    load_app_module()
    from stacks.aurora_stack import RDS_CA_DIR

    runtime = " ".join(stages()[2])
    user = [line.split()[1] for line in stages()[2] if line.startswith("USER ")][-1]
    uid, gid = user.split(":")
    assert f"install -d -o {uid} -g {gid} -m 0755 {RDS_CA_DIR}" in runtime
    assert f'VOLUME ["{RDS_CA_DIR}"]' in runtime


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
        ["api", "--host", "0.0.0.0", "--port", "8080"],  # the api service (and the image's CMD)
        ["relay"],
        ["payments"],
        ["migrate"],
        ["outbox", "list"],  # one-off tasks of the README's walkthrough
        ["flights", "list"],
        ["payments", "list"],
        ["status"],
        ["dead-letters", "list"],
    ],
)
def test_the_container_commands_are_valid_txoutbox_command_lines(args: list[str]) -> None:
    """Parse (without running) what ECS passes to the ENTRYPOINT `txoutbox`: subcommands, then options."""
    from txoutbox.cli.main import cli

    command: click.Command = cli
    rest = list(args)
    path: list[str] = []
    while isinstance(command, click.Group) and rest:
        sub = command.get_command(click.Context(command), rest[0])  # plugins are found lazily
        if sub is None:
            break
        path.append(rest.pop(0))
        command = sub
    assert path == list(itertools.takewhile(lambda a: not a.startswith("-"), args)), f"unknown: {args}"
    command.make_context(" ".join(["txoutbox", *path]), rest)  # raises click.UsageError on a bad option
