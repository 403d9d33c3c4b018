"""The `rds-ca` init container's program (infra/database/fetch_rds_ca.py): only a bundle of certificates,
with the pinned digest when one is given, reaches PGSSLROOTCERT; anything else stops the task's start."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import INFRA

PROGRAM = INFRA / "database" / "fetch_rds_ca.py"
# Any real CA certificate will do as a bundle: the machine's own trust store has them.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def load() -> Any:
    spec = importlib.util.spec_from_file_location("fetch_rds_ca", PROGRAM)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bundle_of_certificates_is_accepted_and_installed_atomically(tmp_path: Path) -> None:
    fetch = load()
    data = SYSTEM_BUNDLE.read_bytes()
    assert fetch.check(data, hashlib.sha256(data).hexdigest()) == data.count(b"-----BEGIN CERTIFICATE-----")
    destination = tmp_path / "rds-ca" / "global-bundle.pem"
    fetch.install(data, destination)
    assert destination.read_bytes() == data
    assert oct(destination.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in destination.parent.iterdir()] == ["global-bundle.pem"]


@pytest.mark.parametrize(
    ("data", "sha256", "message"),
    [
        (b"<html>captive portal</html>", None, "no certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", None, ""),
        (None, "0" * 64, "SHA-256"),
    ],
)
def test_anything_else_is_refused(data: bytes | None, sha256: str | None, message: str) -> None:
    fetch = load()
    import ssl

    with pytest.raises((ValueError, ssl.SSLError), match=message):
        fetch.check(data if data is not None else SYSTEM_BUNDLE.read_bytes(), sha256)


def run(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RDS_CA_BUNDLE_URL": url, "PGSSLROOTCERT": str(tmp_path / "bundle.pem")}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.read_text()], env=env, capture_output=True, text=True, timeout=60
    )


def test_only_https_is_fetched_and_a_failure_is_one_line(tmp_path: Path) -> None:
    out = run(tmp_path, "http://127.0.0.1:9/global-bundle.pem")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "rds-ca: the RDS CA bundle could not be installed: RDS_CA_BUNDLE_URL must be an https:// URL, "
        "got 'http://127.0.0.1:9/global-bundle.pem'"
    )
    assert not (tmp_path / "bundle.pem").exists()
