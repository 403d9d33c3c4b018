"""The migration task's program: apply the migrations, then the service roles, as the master user.

Runs in the application image (`python -c` with this file's text, see infra/stacks/aurora_stack.py), with
libpq's PG* variables holding the master credentials, TXOUTBOX_ROLES_SQL the text of service_roles.sql, and
`<ROLE>_PASSWORD` (e.g. TXOUTBOX_API_PASSWORD) each service's generated password. The passwords go to the
server as SCRAM verifiers computed here, so no password is ever part of a statement (or of a server log).
Exits non-zero, with one line saying why, when anything fails: the deployment then stops.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from psycopg import sql

ROLES = ("txoutbox_api", "txoutbox_relay", "txoutbox_payments")


def apply_roles(conninfo: str, roles_sql: str, passwords: dict[str, str]) -> None:
    """Create/refresh the roles and grants (one transaction) and set each role's password."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(roles_sql)  # several statements: sent as one simple query, run in this transaction
        for role, password in passwords.items():
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier.decode())
                )
            )


def main() -> int:
    missing = [f"{r.upper()}_PASSWORD" for r in ROLES if not os.environ.get(f"{r.upper()}_PASSWORD")]
    if missing or not os.environ.get("TXOUTBOX_ROLES_SQL"):
        print(f"migration task: missing {', '.join(missing) or 'TXOUTBOX_ROLES_SQL'}", file=sys.stderr)
        return 2
    if subprocess.run(["txoutbox", "migrate"], check=False).returncode != 0:
        print("migration task: `txoutbox migrate` failed (see above)", file=sys.stderr)
        return 1
    try:
        apply_roles(
            "", os.environ["TXOUTBOX_ROLES_SQL"], {r: os.environ[f"{r.upper()}_PASSWORD"] for r in ROLES}
        )
    except psycopg.Error as exc:
        print(
            f"migration task: the service roles could not be applied: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"migration task: migrations applied; roles {', '.join(ROLES)} granted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
