"""Settings, read once from the environment.

With no configuration every command talks to the local stack that `txoutbox up` runs: `up` writes the
addresses of its PostgreSQL and SQS into `$TXOUTBOX_HOME/stack.json` (default `.txoutbox/`). Setting
`DATABASE_URL` (or libpq's own `PGHOST` & co.) and `SQS_QUEUE_URL` points everything at real infrastructure.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from txoutbox.errors import ConfigurationError
from txoutbox.wire import MESSAGE_FORMATS

DEFAULT_REGION = "eu-west-1"


def txoutbox_home(env: Mapping[str, str] | None = None) -> Path:
    """The folder holding the local stack's data and its `stack.json`."""
    env = os.environ if env is None else env
    return Path(env.get("TXOUTBOX_HOME", ".txoutbox")).resolve()


def read_stack_file(home: Path) -> dict[str, Any] | None:
    """The addresses a running `txoutbox up` published, or None when no local stack is running."""
    path = home / "stack.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or not _process_alive(pid):
        return None
    return data


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _float(
    env: Mapping[str, str], name: str, default: float, maximum: float, *, allow_zero: bool = False
) -> float:
    """A finite number of seconds in (0, maximum] ([0, maximum] with `allow_zero`), else one sentence."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lower = "at least 0" if allow_zero else "greater than 0"
    problem = f"{name} must be a number of seconds {lower} and at most {maximum:g}, got {raw!r}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(problem) from None
    # nan compares False to everything, so test the accepted range, not the refused one
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0) and value <= maximum):
        raise ConfigurationError(problem)
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    """A whole number in [minimum, maximum], else one sentence naming the variable and the range."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    problem = f"{name} must be a whole number from {minimum} to {maximum}, got {raw!r}"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(problem) from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(problem)
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _url(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) URL or None; the value is not echoed (a webhook URL may carry a token)."""
    raw = env.get(name)
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http:// or https:// URL with a host")
    return raw


def check_database_url(url: str, name: str = "DATABASE_URL") -> None:
    """Refuse a connection string libpq cannot parse, in one sentence that never shows the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the offending fragment, which may be the password itself: leave it out
        reason = re.sub(r'"[^"]*"', '"…"', str(exc).strip().splitlines()[0])
        raise ConfigurationError(f"{name} is not a valid PostgreSQL connection string ({reason})") from None
    port = str(params.get("port") or "")
    if port and not all(p.isdigit() and 1 <= int(p) <= 65535 for p in port.split(",")):
        raise ConfigurationError(f"{name} has an invalid port {port!r} (expected 1 to 65535)")


DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Tuning of the relay; every field has an environment variable `TXOUTBOX_<FIELD>`."""

    batch_size: int = 500  # rows claimed per statement
    workers: int = 2  # claim/publish loops per process: one claims while another publishes
    max_in_flight: int = 16  # SendMessageBatch calls in flight per process
    lease_seconds: float = 30.0  # how long a claim is ours; a crashed relay's events come back after it
    poll_interval: float = 1.0  # fallback when no notification arrives (and for retries coming due)
    max_attempts: int = 10  # transient per-event failures before the event is dead-lettered
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 300.0
    probe_base_seconds: float = 1.0  # circuit breaker: first probe after this
    probe_cap_seconds: float = 10.0
    max_message_bytes: int = 262_144  # SQS message size limit configured on the queue
    max_claim_bytes: int = 4 * 1_048_576  # payload bytes one claim holds at most (at least one event)
    heartbeat_seconds: float = 5.0
    shutdown_timeout: float = 20.0
    metrics_port: int | None = None
    degraded_after_seconds: float = 60.0
    alert_webhook_url: str | None = None
    message_format: str = "envelope"  # or "cloudevents" (txoutbox.wire, txoutbox.cloudevents)
    event_source: str = "/txoutbox"  # CloudEvents `source` (a URI reference)
    retention_days: int = 0  # keep published events this many days (txoutbox.retention); 0: not kept

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelaySettings:
        env = os.environ if env is None else env
        d = cls()
        metrics = env.get("TXOUTBOX_METRICS_PORT")
        settings = cls(
            batch_size=_int(env, "TXOUTBOX_BATCH_SIZE", d.batch_size, 1, 10_000),
            workers=_int(env, "TXOUTBOX_WORKERS", d.workers, 1, 64),
            max_in_flight=_int(env, "TXOUTBOX_MAX_IN_FLIGHT", d.max_in_flight, 1, 1_000),
            lease_seconds=_float(env, "TXOUTBOX_LEASE_SECONDS", d.lease_seconds, DAY),
            poll_interval=_float(env, "TXOUTBOX_POLL_INTERVAL", d.poll_interval, 3_600),
            max_attempts=_int(env, "TXOUTBOX_MAX_ATTEMPTS", d.max_attempts, 1, 1_000),
            retry_base_seconds=_float(env, "TXOUTBOX_RETRY_BASE_SECONDS", d.retry_base_seconds, DAY),
            retry_cap_seconds=_float(env, "TXOUTBOX_RETRY_CAP_SECONDS", d.retry_cap_seconds, DAY),
            probe_base_seconds=_float(env, "TXOUTBOX_PROBE_BASE_SECONDS", d.probe_base_seconds, 3_600),
            probe_cap_seconds=_float(env, "TXOUTBOX_PROBE_CAP_SECONDS", d.probe_cap_seconds, 3_600),
            max_message_bytes=_int(env, "TXOUTBOX_MAX_MESSAGE_BYTES", d.max_message_bytes, 1_024, 1_048_576),
            max_claim_bytes=_int(env, "TXOUTBOX_MAX_CLAIM_BYTES", d.max_claim_bytes, 1_024, 1 << 30),
            heartbeat_seconds=_float(env, "TXOUTBOX_HEARTBEAT_SECONDS", d.heartbeat_seconds, 3_600),
            shutdown_timeout=_float(env, "TXOUTBOX_SHUTDOWN_TIMEOUT", d.shutdown_timeout, 3_600),
            metrics_port=_int(env, "TXOUTBOX_METRICS_PORT", 0, 0, 65_535) if metrics else None,
            degraded_after_seconds=_float(
                env, "HEALTH_DEGRADED_AFTER_SECONDS", d.degraded_after_seconds, DAY, allow_zero=True
            ),
            alert_webhook_url=_url(env, "ALERT_WEBHOOK_URL"),
            message_format=_choice(env, "TXOUTBOX_MESSAGE_FORMAT", d.message_format, MESSAGE_FORMATS),
            event_source=env.get("TXOUTBOX_EVENT_SOURCE", "").strip() or d.event_source,
            retention_days=_int(env, "TXOUTBOX_RETENTION_DAYS", d.retention_days, 0, 3_650),
        )
        for kind in ("RETRY", "PROBE"):
            base = float(getattr(settings, f"{kind.lower()}_base_seconds"))
            if getattr(settings, f"{kind.lower()}_cap_seconds") < base:
                raise ConfigurationError(
                    f"TXOUTBOX_{kind}_CAP_SECONDS must be at least TXOUTBOX_{kind}_BASE_SECONDS ({base:g})"
                )
        return settings


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the database and the queue are."""

    database_url: str
    sqs_queue_url: str | None
    sqs_dlq_url: str | None
    sqs_endpoint_url: str | None
    aws_region: str
    local_stack: bool  # True when the addresses came from `txoutbox up`'s stack.json
    fault_url: str | None = None  # the local stack's fault switch (devstack only)
    relay: RelaySettings = field(default_factory=RelaySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, need_sqs: bool = False) -> Settings:
        """Read the settings; raise ConfigurationError naming what is missing."""
        env = os.environ if env is None else env
        stack = read_stack_file(txoutbox_home(env))
        database_url = env.get("DATABASE_URL")
        if not database_url and env.get("PGHOST"):
            database_url = ""  # libpq reads PGHOST, PGUSER, PGPASSWORD, ... itself
        local = False
        if database_url is None:
            if stack is None:
                raise ConfigurationError(
                    "no database configured: start the local stack with `txoutbox up` (or `make run`), "
                    "or set DATABASE_URL"
                )
            database_url = str(stack["database_url"])
            local = True
        if database_url:
            check_database_url(
                database_url, "DATABASE_URL" if not local else "the local stack's database URL"
            )
        queue_url = _url(env, "SQS_QUEUE_URL")
        dlq_url = _url(env, "SQS_DLQ_URL")
        endpoint = _url(env, "SQS_ENDPOINT_URL")
        fault_url = None
        if not queue_url and stack is not None:
            queue_url = stack.get("sqs_queue_url")
            dlq_url = dlq_url or stack.get("sqs_dlq_url")
            endpoint = endpoint or stack.get("sqs_endpoint_url")
            fault_url = stack.get("fault_url")
            local = True
        if need_sqs and not queue_url:
            raise ConfigurationError(
                "no queue configured: start the local stack with `txoutbox up`, or set SQS_QUEUE_URL"
            )
        region = (
            env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or (str(stack.get("aws_region")) if stack and stack.get("aws_region") else DEFAULT_REGION)
        )
        return cls(
            database_url=database_url,
            sqs_queue_url=queue_url or None,
            sqs_dlq_url=dlq_url or None,
            sqs_endpoint_url=endpoint or None,
            aws_region=region,
            local_stack=local,
            fault_url=fault_url,
            relay=RelaySettings.from_env(env),
        )
