"""The docs cannot drift from the code: the configuration reference (docs/hooks/config_reference.py) names
every environment variable the code reads, every setting is read through its documented declaration,
every file ARCHITECTURE.md names exists, and the offline check refuses a page that loads assets from a CDN.
The site itself is built by `make docs` (`mkdocs build --strict`)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest

from txoutbox.config import LOCATION_SETTINGS, RelaySettings

ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
NOT_SETTINGS = {"PATH"}  # the system's own, passed on to child processes


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_env_lookup(node: ast.Call) -> bool:
    """`env.get("X")`, `os.environ.get("X")`, `os.getenv("X")`: a variable read by name."""
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "getenv":
        return True
    if not (isinstance(func, ast.Attribute) and func.attr == "get"):
        return False
    owner = func.value
    return (isinstance(owner, ast.Name) and owner.id in {"env", "environ"}) or (
        isinstance(owner, ast.Attribute) and owner.attr == "environ"
    )


def variables_read_by_the_code() -> set[str]:
    """Every environment variable named in src/: constants shaped like one (`TXOUTBOX_HOME`), and any name
    looked up in an environment mapping (`env.get("PGHOST")`)."""
    names: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
                names.add(node.value)
            elif (
                isinstance(node, ast.Call)
                and _is_env_lookup(node)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names - NOT_SETTINGS


def test_reference_names_every_variable_the_code_reads_and_no_other() -> None:
    documented = _hook("config_reference").documented_names()
    read = variables_read_by_the_code()
    assert read - documented == set(), "read by the code but missing from the configuration reference"
    assert documented - read == set(), "in the configuration reference but no longer read by the code"


def test_reference_markdown_has_one_row_per_variable() -> None:
    hook = _hook("config_reference")
    markdown = hook.reference_markdown()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", markdown, flags=re.MULTILINE)
    assert sorted(rows) == sorted(hook.documented_names())
    assert "| `TXOUTBOX_BATCH_SIZE` | events claimed per statement | 500 | 1 to 10,000 |" in markdown


def _valid_non_default(field_name: str) -> tuple[str, object]:
    """A value from the declared range that differs from the default, as text and as read."""
    spec = next(f for f in fields(RelaySettings) if f.name == field_name).metadata["env"]
    if spec.kind in ("int", "port"):
        return str(int(spec.maximum)), int(spec.maximum)
    if spec.kind == "seconds":
        return repr(spec.maximum), spec.maximum
    if spec.kind == "choice":
        return spec.choices[-1], spec.choices[-1]
    if spec.kind == "url":
        return "https://alerts.example/hook", "https://alerts.example/hook"
    return "/my-service", "/my-service"


@pytest.mark.parametrize("field_name", [f.name for f in fields(RelaySettings)])
def test_every_relay_setting_is_read_from_its_declared_variable(field_name: str) -> None:
    spec = next(f for f in fields(RelaySettings) if f.name == field_name).metadata["env"]
    text, value = _valid_non_default(field_name)
    env = {spec.name: text}
    if field_name in ("retry_base_seconds", "probe_base_seconds"):  # a base may not exceed its cap
        env[spec.name.replace("_BASE_", "_CAP_")] = text
    assert getattr(RelaySettings.from_env(env), field_name) == value
    assert getattr(RelaySettings.from_env({}), field_name) != value


def test_location_settings_are_declared_once() -> None:
    names = [s.name for s in LOCATION_SETTINGS]
    assert len(names) == len(set(names)) and "DATABASE_URL" in names and "SQS_QUEUE_URL" in names


def test_every_path_architecture_names_exists() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    paths = [
        p
        for p in re.findall(r"`([^`\s]+)`", text)
        if ("/" in p and not p.startswith("/")) or re.search(r"\.(py|sql|md|toml|mjs|sh)$", p)
    ]
    assert len(paths) > 40
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_links_of_the_readme_resolve() -> None:
    """The README is the front page: every link it has (relative to the root) must lead somewhere."""
    links = re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text())
    assert links and [link for link in links if not (ROOT / link).exists()] == []


def test_offline_check_refuses_assets_from_other_hosts(tmp_path: Path) -> None:
    check = _hook("offline_check")
    (tmp_path / "ok.html").write_text(
        '<a href="https://aws.amazon.com/sqs/">SQS</a><script src="assets/bundle.js"></script>'
        '<link rel="stylesheet" href="assets/main.css">'
    )
    assert check.external_assets(tmp_path) == []
    (tmp_path / "cdn.html").write_text('<script src="https://unpkg.com/iframe-worker/shim"></script>')
    (tmp_path / "fonts.html").write_text(
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>'
    )
    (tmp_path / "style.css").write_text("@import url('https://fonts.googleapis.com/css?family=Roboto');")
    found = check.external_assets(tmp_path)
    assert [f.split(":")[0] for f in found] == ["cdn.html", "fonts.html", "style.css"]


def test_the_site_builds_strict_and_offline(tmp_path: Path) -> None:
    """`make docs` as a test: a page linking a missing file, or a CDN asset, fails `make test` too."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (the `docs` dependency group)")
    site = tmp_path / "site"
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (site / "configuration.html").read_text().count("TXOUTBOX_BATCH_SIZE") >= 1
    assert (site / "api" / "relay.html").is_file()
