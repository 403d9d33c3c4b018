"""The library stands alone: no `txoutbox` module imports the reference system (`flights`, `payments`) or the
local stack (`devstack`). Checked twice, as `make lint` runs it: statically (every import statement, also
those inside functions) and in a fresh interpreter (every module imported, then `sys.modules` inspected)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import txoutbox

FORBIDDEN = ("flights", "payments", "devstack")
LIBRARY = Path(txoutbox.__file__).parent


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif (  # importlib.import_module("flights...") / __import__("flights...")
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append((node.lineno, node.args[0].value))
    return names


def test_no_library_module_imports_the_apps_statically() -> None:
    arrows = [
        f"{path.relative_to(LIBRARY.parent)}:{line} imports {name}"
        for path in sorted(LIBRARY.rglob("*.py"))
        for line, name in _imported_names(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in FORBIDDEN
    ]
    assert arrows == [], "txoutbox must not import the apps:\n" + "\n".join(arrows)


_PROBE = """
import importlib, json, pkgutil, sys
import txoutbox
failed = {}
for info in pkgutil.walk_packages(txoutbox.__path__, "txoutbox."):
    if info.name == "txoutbox.__main__":  # runs the CLI when imported
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional extra not installed: reported, not hidden
        failed[info.name] = str(exc)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in %r)
print(json.dumps({"loaded": loaded, "failed": failed}))
"""


def test_importing_every_library_module_loads_no_app() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE % (FORBIDDEN,)], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"importing txoutbox loaded {report['loaded']}"
    # a module that cannot be imported at all would escape the check above
    assert all(m.startswith("txoutbox.") for m in report["failed"]) and not report["failed"], report["failed"]
