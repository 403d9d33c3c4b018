"""The `rds-ca` init container's program: put the RDS CA bundle where libpq's PGSSLROOTCERT points.

The tasks connect with `sslmode=verify-full`: libpq checks the server's certificate against this bundle and
its name against PGHOST. The bundle is fetched at task start over HTTPS (the download itself verified
against the image's Debian CA certificates) from RDS_CA_BUNDLE_URL, and, when RDS_CA_BUNDLE_SHA256 is set,
must have exactly that digest. It is checked to hold certificates, then written atomically. Runs as
`python -c` with this file's text in the application image; exits non-zero with one line when it cannot,
so the service's container (which waits for this one to succeed) never starts without verification.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

MAX_BYTES = 2_000_000
ATTEMPTS = 5


def fetch(url: str) -> bytes:
    if not url.startswith("https://"):
        raise ValueError(f"RDS_CA_BUNDLE_URL must be an https:// URL, got {url!r}")
    context = ssl.create_default_context()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
                data: bytes = response.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ValueError(f"{url} is larger than {MAX_BYTES} bytes")
            return data
        except OSError as exc:
            if attempt == ATTEMPTS:
                raise
            print(f"rds-ca: {url}: {exc}; retrying", file=sys.stderr)
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def check(data: bytes, sha256: str | None) -> int:
    """The number of certificates in `data`; ValueError when it is not the expected bundle."""
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise ValueError("the bundle's SHA-256 is not RDS_CA_BUNDLE_SHA256")
    text = data.decode("ascii")
    count = text.count("-----BEGIN CERTIFICATE-----")
    if count == 0:
        raise ValueError("the bundle holds no certificate")
    ssl.create_default_context(cadata=text)  # raises ssl.SSLError when a certificate does not parse
    return count


def install(data: bytes, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(data)
    os.chmod(partial, 0o644)
    os.replace(partial, destination)


def main() -> int:
    url = os.environ.get("RDS_CA_BUNDLE_URL", "")
    destination = Path(os.environ.get("PGSSLROOTCERT", ""))
    try:
        if not destination.is_absolute():
            raise ValueError("PGSSLROOTCERT must be an absolute path")
        data = fetch(url)
        count = check(data, os.environ.get("RDS_CA_BUNDLE_SHA256") or None)
        install(data, destination)
    except (OSError, ValueError, UnicodeDecodeError, ssl.SSLError) as exc:
        print(f"rds-ca: the RDS CA bundle could not be installed: {exc}", file=sys.stderr)
        return 1
    print(f"rds-ca: {count} certificates from {url} in {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
