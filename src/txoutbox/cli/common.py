"""What every command shares, the library's and the plugins' (`flights.cli`, `payments.cli`, ...)."""

from __future__ import annotations

import re
import socket

import click
import psycopg

from txoutbox import ops
from txoutbox.config import Settings
from txoutbox.errors import ConfigurationError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
limit_option = click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))


def load_settings(*, need_sqs: bool = False) -> Settings:
    """The settings from the environment (or the local stack); ConfigurationError names what is wrong."""
    return Settings.from_env(need_sqs=need_sqs)


def connect() -> psycopg.Connection[ops.Row]:
    """An autocommit connection to the configured database, rows as dicts."""
    return ops.connect(load_settings().database_url)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `host:port` now (`host` an IPv4 or IPv6 address or a name)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# What the server says (after FATAL:) when it refuses a connection no retry can heal: wrong password, unknown
# role or database, no pg_hba.conf entry. psycopg gives no SQLSTATE for a failed connection, so the text is
# matched. A service started with them would otherwise log the same refusal every second, forever.
_MISCONFIGURED = re.compile(
    r"password authentication failed|role \S+ does not exist|database \S+ does not exist"
    r"|no pg_hba\.conf entry|pg_hba\.conf rejects|permission denied for database"
)


def check_database(settings: Settings) -> None:
    """Refuse to start a service on a database that refuses its credentials or does not exist.

    An unreachable database is not refused: it may be starting or failing over, and the services retry.
    """
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        text = " ".join(str(exc).split())
        reason = text.rsplit("FATAL:", 1)[-1].strip()
        if "FATAL:" in text and _MISCONFIGURED.search(reason):
            raise ConfigurationError(
                f"the database refused the connection ({reason}): check DATABASE_URL"
            ) from None


def check_port(host: str, port: int, what: str) -> None:
    """Refuse to start `what` on a port already in use, in one sentence (not a bind traceback)."""
    if not port_is_free(port, host):
        raise ConfigurationError(
            f"port {port} on {host} is already in use, so {what} cannot start there: stop whatever uses it, "
            "or choose another port"
        )
