"""The outbox alert: one shared state (ok / degraded), and the webhook POST that announces each change.

The heartbeat flips the state (`check`, a database write only: a slow webhook never delays a heartbeat).
The POST is a separate task (`deliver`) that takes the change not yet announced from the database, under a
short lease so one relay sends it, and retries with backoff until the receiver accepts it. Since the
pending change lives in the database, a relay that dies between the flip and the POST loses nothing: any
relay with the webhook configured sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg

from txoutbox.connections import DB_ERRORS
from txoutbox.relay.store import RelayStore

log = logging.getLogger("txoutbox.relay")

POST_TIMEOUT_SECONDS = 5.0
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 60.0


class Alerts:
    """Flips the shared alert state from the system's health, and delivers the webhook POSTs."""

    def __init__(
        self,
        store: RelayStore,
        webhook_url: str | None,
        relay_id: str,
        *,
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        retry_cap_seconds: float = RETRY_CAP_SECONDS,
    ) -> None:
        self.store = store
        self.webhook_url = webhook_url
        self.relay_id = relay_id
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self._pending = asyncio.Event()

    async def check(self, health: dict[str, Any]) -> None:
        """The state is the system's, as `/health` reports it (every live relay's circuit, the oldest
        event, the dead letters), so relays agree and one change is announced once."""
        degraded = health["status"] == "degraded"
        detail = {**health["outbox"], "reasons": health["reasons"]}
        if not await self.store.flip_alert("degraded" if degraded else "ok", detail):
            return
        log.log(
            logging.WARNING if degraded else logging.INFO,
            "outbox %s: %s",
            "degraded" if degraded else "recovered",
            "; ".join(health["reasons"]) or f"backlog {detail['backlog']}",
        )
        self._pending.set()

    async def deliver(self, every_seconds: float, stopping: Callable[[], bool]) -> None:
        """POST each state change until accepted; look for one every `every_seconds` (changes flipped by
        other relays, or left by a relay that died) and at once after a flip here."""
        if not self.webhook_url:
            return
        url = self.webhook_url
        delay = self.retry_base_seconds
        reported: str | None = None
        while not stopping():
            self._pending.clear()
            wait = every_seconds
            try:
                pending = await self.store.take_alert(POST_TIMEOUT_SECONDS * 3)
                if pending is not None:
                    state, detail, changed_at = pending
                    payload = {
                        "alert": "txoutbox.outbox",
                        "state": "degraded" if state == "degraded" else "recovered",
                        "relay": self.relay_id,
                        "at": changed_at.astimezone(dt.UTC).isoformat(),
                        **detail,
                    }
                    if await asyncio.to_thread(_post_json, url, payload):
                        await self.store.alert_sent(state, changed_at)
                        delay = self.retry_base_seconds
                        continue  # another change may be waiting
                    await self.store.alert_not_sent()
                    wait, delay = delay, min(delay * 2, self.retry_cap_seconds)
            except DB_ERRORS as exc:
                self.store.failed(exc)
            except psycopg.Error as exc:  # not a lost database: say it once, try again at the next look
                if exc.sqlstate != reported:
                    reported = exc.sqlstate
                    log.error("alert delivery failed (%s, SQLSTATE %s)", type(exc).__name__, exc.sqlstate)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pending.wait(), wait)


def _post_json(url: str, payload: dict[str, Any]) -> bool:
    """POST `payload`; True when the receiver accepted it (2xx)."""
    request = urllib.request.Request(  # noqa: S310 - an http(s) URL, checked by config._url
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS):  # noqa: S310
            return True
    except (OSError, ValueError) as exc:
        # The URL may hold a token: log only where it points, and the error without the URL.
        host = urllib.parse.urlsplit(url).hostname
        reason = getattr(exc, "code", None) or getattr(exc, "reason", None) or type(exc).__name__
        log.warning("alert webhook at %s failed (%s); retrying with backoff", host, reason)
        return False
