"""How txoutbox opens its connections: PostgreSQL pools and SQS clients, configured in one place."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# What a lost or unreachable database raises: callers wait and retry these (relay, consumer).
DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

# TCP keepalives: a connection whose peer vanished (failover, network cut) is noticed within ~25 s.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Credentials for the local SQS-protocol server, which checks none; never used against AWS.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


async def open_pool(conninfo: str, *, max_size: int, name: str) -> AsyncConnectionPool[Any]:
    """An autocommit pool, opened without waiting: a database that is down at start-up is retried later."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=1,
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
