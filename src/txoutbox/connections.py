"""How txoutbox opens its connections: PostgreSQL pools and SQS clients, configured in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from txoutbox.errors import ConfigurationError

# What a lost or unreachable database raises: callers wait and retry these (relay, consumer).
DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# Errors of one statement that may pass if tried again (a timeout, a lock, a deadlock, a full disk being
# cleaned up), but need not: retried a bounded number of times, then surfaced. They are OperationalErrors,
# so catch them before DB_ERRORS. Any other psycopg.Error (DataError, ProgrammingError, ...) never heals by
# retrying: surface it at once.
BOUNDED_RETRY_ERRORS = (
    errors.QueryCanceled,
    errors.LockNotAvailable,
    errors.DeadlockDetected,
    errors.SerializationFailure,
    errors.DiskFull,
    errors.OutOfMemory,
)


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """Bounds on every connection txoutbox opens, in seconds (0: no bound): connecting, any one statement,
    waiting for a lock. Environment: TXOUTBOX_DB_CONNECT_TIMEOUT, TXOUTBOX_DB_STATEMENT_TIMEOUT,
    TXOUTBOX_DB_LOCK_TIMEOUT."""

    connect_seconds: float = 10.0
    statement_seconds: float = 60.0
    lock_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DbTimeouts:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            _seconds(env, "TXOUTBOX_DB_CONNECT_TIMEOUT", d.connect_seconds),
            _seconds(env, "TXOUTBOX_DB_STATEMENT_TIMEOUT", d.statement_seconds),
            _seconds(env, "TXOUTBOX_DB_LOCK_TIMEOUT", d.lock_seconds),
        )

    def apply(self, conninfo: str) -> str:
        """`conninfo` with these bounds added (a connect_timeout or options already in it are kept)."""
        params = conninfo_to_dict(conninfo)
        options = str(params.get("options") or "")
        extra: dict[str, Any] = {
            "options": " ".join(
                part
                for part in (
                    options,
                    f"-c statement_timeout={round(self.statement_seconds * 1000)}",
                    f"-c lock_timeout={round(self.lock_seconds * 1000)}",
                )
                if part
            )
        }
        if "connect_timeout" not in params and self.connect_seconds:
            extra["connect_timeout"] = max(2, math.ceil(self.connect_seconds))  # libpq: whole seconds, >= 2
        return make_conninfo(conninfo, **extra)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 86_400:
        raise ConfigurationError(f"{name} must be between 0 and 86400 seconds, got {raw!r}")
    return value


# TCP keepalives: a connection whose peer vanished (failover, network cut) is noticed within ~25 s.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Credentials for the local SQS-protocol server, which checks none; never used against AWS.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


async def open_pool(
    conninfo: str,
    *,
    max_size: int,
    name: str,
    timeouts: DbTimeouts | None = None,
    settings: Mapping[str, str] | None = None,
    min_size: int = 1,
) -> AsyncConnectionPool[Any]:
    """An autocommit pool, opened without waiting: a database that is down at start-up is retried later.
    Its connections are bounded by `timeouts` (default: DbTimeouts.from_env()).

    `settings`: settings of every session of the pool (`-c name=value`; why the relay sets some:
    txoutbox.relay.store.SESSION_SETTINGS)."""
    conninfo = (timeouts or DbTimeouts.from_env()).apply(conninfo)
    if settings:
        options = str(conninfo_to_dict(conninfo).get("options") or "")
        extra = " ".join(f"-c {name}={value}" for name, value in settings.items())
        conninfo = make_conninfo(conninfo, options=f"{options} {extra}".strip())
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, **KEEPALIVES},
        open=False,
        timeout=10,
        name=name,
    )
    await pool.open(wait=False)
    return pool


def _client_args(
    region: str,
    endpoint_url: str | None,
    local: bool,
    max_connections: int,
    connect_timeout: float,
    read_timeout: float,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "region_name": region,
        "endpoint_url": endpoint_url,
        **(LOCAL_CREDENTIALS if local else {}),
    }
    args["config_kwargs"] = {
        "max_pool_connections": max_connections,
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        # One quick retry for a blip; anything longer is the caller's job (the relay's circuit breaker).
        "retries": {"total_max_attempts": 2, "mode": "standard"},
    }
    return args


def aio_sqs_client(
    region: str,
    endpoint_url: str | None,
    *,
    local: bool,
    max_connections: int = 10,
    connect_timeout: float = 5,
    read_timeout: float = 5,
    validate_parameters: bool = True,
) -> Any:
    """An aiobotocore SQS client context manager (`async with aio_sqs_client(...) as sqs:`).

    `validate_parameters=False` skips botocore's client-side check of every request's parameters (about
    a fifth of the CPU of a SendMessageBatch call); for callers whose requests are built by code, not
    typed by users. SQS validates every request anyway.
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    args = _client_args(region, endpoint_url, local, max_connections, connect_timeout, read_timeout)
    config = AioConfig(**args.pop("config_kwargs"), parameter_validation=validate_parameters)
    session: Any = get_session()
    return session.create_client("sqs", config=config, **args)


def sqs_client(
    region: str,
    endpoint_url: str | None,
    *,
    local: bool,
    connect_timeout: float = 5,
    read_timeout: float = 25,
) -> Any:
    """A synchronous botocore SQS client (operator commands, test fixtures)."""
    import botocore.session
    from botocore.config import Config

    args = _client_args(region, endpoint_url, local, 10, connect_timeout, read_timeout)
    config = Config(**args.pop("config_kwargs"))
    session: Any = botocore.session.get_session()
    return session.create_client("sqs", config=config, **args)
