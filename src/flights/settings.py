"""The booking service's own settings (the database and the outbox come from `txoutbox.config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from txoutbox.errors import ConfigurationError

HEALTH_DETAIL_MODES = ("loopback", "always", "never")
DEFAULT_HEALTH_DETAIL = "loopback"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """`TXOUTBOX_HEALTH_DETAIL`: who sees the reasons of a degraded `/health` (they may quote the broker:
    queue ARNs, account ids). `loopback` (default): only clients on this machine, so through a load balancer
    `/health` says ok/degraded and counts, without text; `always`; `never`."""

    health_detail: str = DEFAULT_HEALTH_DETAIL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        detail = (env.get("TXOUTBOX_HEALTH_DETAIL") or DEFAULT_HEALTH_DETAIL).strip().lower()
        if detail not in HEALTH_DETAIL_MODES:
            raise ConfigurationError(
                f"TXOUTBOX_HEALTH_DETAIL must be one of {', '.join(HEALTH_DETAIL_MODES)}, got {detail!r}"
            )
        return cls(health_detail=detail)
