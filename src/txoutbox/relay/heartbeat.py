"""The relay's heartbeat: registers its circuit state, refreshes the gauges, and checks the alert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from txoutbox.connections import DB_ERRORS
from txoutbox.metrics import RelayMetrics
from txoutbox.relay.alerts import Alerts
from txoutbox.relay.circuit import Circuit
from txoutbox.relay.store import RelayStore

log = logging.getLogger("txoutbox.relay")


async def beat(
    store: RelayStore,
    circuit: Circuit,
    metrics: RelayMetrics,
    alerts: Alerts,
    *,
    every_seconds: float,
    report_now: asyncio.Event,
    stopping: Callable[[], bool],
    published_total: Callable[[], int],
) -> None:
    """Every `every_seconds`, or at once when `report_now` is set (the circuit changed), until stopped."""
    reported: str | None = None
    while not stopping():
        try:
            health = await store.heartbeat(circuit.state.value, circuit.reason, published_total())
            outbox = health["outbox"]
            metrics.backlog.set(outbox["backlog"])
            metrics.oldest_age.set(outbox["oldest_age_seconds"])
            metrics.dead_letters.set(outbox["dead_letters"])
            await alerts.check(health)
        except DB_ERRORS as exc:
            store.failed(exc)
        except psycopg.Error as exc:  # not a lost database (a timeout that persists, a bug): say it once
            if exc.sqlstate != reported:
                reported = exc.sqlstate
                log.error(
                    "relay heartbeat failed (%s, SQLSTATE %s); retrying", type(exc).__name__, exc.sqlstate
                )
        else:
            reported = None
        if not stopping():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(report_now.wait(), every_seconds)
            report_now.clear()
