"""Finding Node.js and the npm packages `make` installed into the project."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from txoutbox.errors import ConfigurationError

MIN_NODE_MAJOR = 20


def node_binary() -> str:
    """Path of `node`, checked to be >= 20; ConfigurationError otherwise."""
    node = shutil.which("node")
    if node is None:
        raise ConfigurationError(
            f"Node.js >= {MIN_NODE_MAJOR} is needed for the local SQS emulator (fauxqs) but `node` is not on "
            "PATH: install Node.js, or point SQS_QUEUE_URL at a real queue"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_NODE_MAJOR:
        raise ConfigurationError(f"Node.js >= {MIN_NODE_MAJOR} is needed for fauxqs; found {version or '?'}")
    return node


def find_package(name: str) -> Path:
    """`node_modules/<name>` of the project (searched upwards from the working directory and this file)."""
    override = os.environ.get("TXOUTBOX_NODE_MODULES")
    starts = [Path(override)] if override else []
    starts += [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in [start, *start.parents]:
            candidate = folder / "node_modules" / name if folder.name != "node_modules" else folder / name
            if (candidate / "package.json").is_file():
                return candidate
    raise ConfigurationError(
        f"the npm package {name!r} is not installed: run `make install` (it runs `npm ci`) in the repository"
    )
