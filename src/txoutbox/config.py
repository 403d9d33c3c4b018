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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
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
SettingKind = Literal["int", "seconds", "port", "choice", "url", "text"]


@dataclass(frozen=True, slots=True)
class EnvSetting:
    """One environment variable: its name, a one-line doc, and the values it accepts.

    `RelaySettings.from_env` reads each field through its declaration, and the docs' configuration reference
    (docs/hooks/config_reference.py) is generated from the same declarations, so the two cannot drift.
    """

    name: str
    doc: str
    kind: SettingKind = "text"
    minimum: int = 0  # int
    maximum: float = 0  # int, seconds, port
    allow_zero: bool = False  # seconds: [0, maximum] instead of (0, maximum]
    choices: tuple[str, ...] = ()
    default_doc: str = ""  # the default as documented, for variables that are not a field with a default

    def read(self, env: Mapping[str, str], default: Any) -> Any:
        """The value from `env`, `default` when unset or blank; ConfigurationError when out of range."""
        if self.kind == "int":
            return _int(env, self.name, default, self.minimum, int(self.maximum))
        if self.kind == "seconds":
            return _float(env, self.name, default, self.maximum, allow_zero=self.allow_zero)
        if self.kind == "port":  # unset: off
            return _int(env, self.name, 0, 0, int(self.maximum)) if env.get(self.name) else None
        if self.kind == "choice":
            return _choice(env, self.name, default, self.choices)
        if self.kind == "url":
            return _url(env, self.name)
        return env.get(self.name, "").strip() or default

    @property
    def accepted(self) -> str:
        """The accepted values, as the reference shows them."""
        if self.kind in ("int", "port"):
            return f"{self.minimum:,} to {int(self.maximum):,}"
        if self.kind == "seconds":
            return f"{'0' if self.allow_zero else '> 0'} to {self.maximum:,g} s"
        if self.kind == "choice":
            return " or ".join(f"`{c}`" for c in self.choices)
        if self.kind == "url":
            return "http:// or https:// URL"
        return ""


def _env(default: Any, name: str, doc: str, kind: SettingKind = "text", **spec: Any) -> Any:
    """A settings field read from the environment variable `name` (see `EnvSetting`)."""
    return field(default=default, metadata={"env": EnvSetting(name, doc, kind, **spec)})


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Tuning of the relay; each field is read from the environment variable its declaration names."""

    batch_size: int = _env(
        500, "TXOUTBOX_BATCH_SIZE", "events claimed per statement", "int", minimum=1, maximum=10_000
    )
    workers: int = _env(
        2,
        "TXOUTBOX_WORKERS",
        "claim/publish loops per relay process: one claims while another publishes",
        "int",
        minimum=1,
        maximum=64,
    )
    max_in_flight: int = _env(
        16,
        "TXOUTBOX_MAX_IN_FLIGHT",
        "`SendMessageBatch` calls in flight per relay process",
        "int",
        minimum=1,
        maximum=1_000,
    )
    lease_seconds: float = _env(
        30.0,
        "TXOUTBOX_LEASE_SECONDS",
        "how long a claim is held; a crashed relay's events come back after it",
        "seconds",
        maximum=DAY,
    )
    poll_interval: float = _env(
        1.0,
        "TXOUTBOX_POLL_INTERVAL",
        "polling fallback when no NOTIFY arrives, and for retries coming due",
        "seconds",
        maximum=3_600,
    )
    max_attempts: int = _env(
        10,
        "TXOUTBOX_MAX_ATTEMPTS",
        "transient per-event failures before the event is dead-lettered",
        "int",
        minimum=1,
        maximum=1_000,
    )
    retry_base_seconds: float = _env(
        1.0,
        "TXOUTBOX_RETRY_BASE_SECONDS",
        "per-event backoff: first delay (exponential, full jitter)",
        "seconds",
        maximum=DAY,
    )
    retry_cap_seconds: float = _env(
        300.0,
        "TXOUTBOX_RETRY_CAP_SECONDS",
        "per-event backoff: longest delay (at least the base)",
        "seconds",
        maximum=DAY,
    )
    probe_base_seconds: float = _env(
        1.0,
        "TXOUTBOX_PROBE_BASE_SECONDS",
        "circuit breaker: first probe after the broker became unavailable",
        "seconds",
        maximum=3_600,
    )
    probe_cap_seconds: float = _env(
        10.0,
        "TXOUTBOX_PROBE_CAP_SECONDS",
        "circuit breaker: longest wait between probes (at least the base)",
        "seconds",
        maximum=3_600,
    )
    max_message_bytes: int = _env(
        262_144,
        "TXOUTBOX_MAX_MESSAGE_BYTES",
        "the queue's message size limit; larger events are dead-lettered",
        "int",
        minimum=1_024,
        maximum=1_048_576,
    )
    max_claim_bytes: int = _env(
        4 * 1_048_576,
        "TXOUTBOX_MAX_CLAIM_BYTES",
        "payload bytes one claim holds at most (always at least one event)",
        "int",
        minimum=1_024,
        maximum=1 << 30,
    )
    heartbeat_seconds: float = _env(
        5.0,
        "TXOUTBOX_HEARTBEAT_SECONDS",
        "how often a relay records that it is alive (and its circuit state)",
        "seconds",
        maximum=3_600,
    )
    shutdown_timeout: float = _env(
        20.0,
        "TXOUTBOX_SHUTDOWN_TIMEOUT",
        "on SIGTERM, how long the batches in hand may take to finish",
        "seconds",
        maximum=3_600,
    )
    metrics_port: int | None = _env(
        None,
        "TXOUTBOX_METRICS_PORT",
        "the relay's Prometheus metrics on this port (and `TXOUTBOX_METRICS_HOST`); 0: off",
        "port",
        maximum=65_535,
        default_doc="off",
    )
    degraded_after_seconds: float = _env(
        60.0,
        "HEALTH_DEGRADED_AFTER_SECONDS",
        "`/health` says `degraded` when the oldest event is older",
        "seconds",
        maximum=DAY,
        allow_zero=True,
    )
    alert_webhook_url: str | None = _env(
        None,
        "ALERT_WEBHOOK_URL",
        "one JSON POST per state change (degraded / recovered)",
        "url",
        default_doc="off",
    )
    message_format: str = _env(
        "envelope",
        "TXOUTBOX_MESSAGE_FORMAT",
        "what the relay and `replay` send (txoutbox.wire, txoutbox.cloudevents)",
        "choice",
        choices=MESSAGE_FORMATS,
    )
    event_source: str = _env("/txoutbox", "TXOUTBOX_EVENT_SOURCE", "CloudEvents `source` (a URI reference)")
    retention_days: int = _env(
        0,
        "TXOUTBOX_RETENTION_DAYS",
        "keep published events this many days (txoutbox.retention); 0: not kept",
        "int",
        minimum=0,
        maximum=3_650,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelaySettings:
        """Read every field from its environment variable; ConfigurationError names a bad one."""
        env = os.environ if env is None else env
        settings = cls(**{f.name: f.metadata["env"].read(env, f.default) for f in fields(cls)})
        for kind in ("RETRY", "PROBE"):
            base = float(getattr(settings, f"{kind.lower()}_base_seconds"))
            if getattr(settings, f"{kind.lower()}_cap_seconds") < base:
                raise ConfigurationError(
                    f"TXOUTBOX_{kind}_CAP_SECONDS must be at least TXOUTBOX_{kind}_BASE_SECONDS ({base:g})"
                )
        return settings


# Where the database and the queue are: read by `Settings.from_env` (its fallbacks to the local stack are
# more than one variable each, so they are declared here for the reference and read by name below).
LOCATION_SETTINGS = (
    EnvSetting("DATABASE_URL", "PostgreSQL connection URL (e.g. Aurora)", default_doc="the local stack"),
    EnvSetting(
        "PGHOST",
        "libpq's own variables (`PGHOST`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, ...) "
        "when DATABASE_URL is unset",
        default_doc="unset",
    ),
    EnvSetting(
        "SQS_QUEUE_URL",
        "the FIFO queue the relay publishes to",
        "url",
        default_doc="the local `flightQueue.fifo`",
    ),
    EnvSetting(
        "SQS_DLQ_URL",
        "its dead-letter queue (`txoutbox dlq ...`)",
        "url",
        default_doc="the local `flightDLQ.fifo`",
    ),
    EnvSetting("SQS_ENDPOINT_URL", "SQS endpoint; unset for AWS", "url", default_doc="the local fauxqs"),
    EnvSetting(
        "AWS_REGION", "region of the queue (else `AWS_DEFAULT_REGION`)", default_doc=f"`{DEFAULT_REGION}`"
    ),
    EnvSetting(
        "AWS_DEFAULT_REGION",
        "region of the queue when `AWS_REGION` is unset",
        default_doc=f"`{DEFAULT_REGION}`",
    ),
    EnvSetting(
        "TXOUTBOX_HOME", "where `txoutbox up` keeps its data and `stack.json`", default_doc="`.txoutbox`"
    ),
)


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
