"""The outbox alert: one shared state (ok / degraded) flipped by whichever relay sees the change first,
and the webhook POST that announces it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import urllib.parse
import urllib.request
from typing import Any

from txoutbox.relay.store import RelayStore

log = logging.getLogger("txoutbox.relay")


class Alerts:
    """Flips the shared alert state from the system's health; the relay whose flip lands sends the POST."""

    def __init__(self, store: RelayStore, webhook_url: str | None, relay_id: str) -> None:
        self.store = store
        self.webhook_url = webhook_url
        self.relay_id = relay_id

    async def check(self, health: dict[str, Any]) -> None:
        """The state is the system's, as `/health` reports it (every live relay's circuit, the oldest
        event, the dead letters), so relays agree and one POST goes out per change."""
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
        if self.webhook_url:
            payload = {
                "alert": "txoutbox.outbox",
                "state": "degraded" if degraded else "recovered",
                "relay": self.relay_id,
                "at": dt.datetime.now(dt.UTC).isoformat(),
                **detail,
            }
            await asyncio.to_thread(_post_json, self.webhook_url, payload)


def _post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - operator-configured http(s) URL
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass
    except OSError as exc:
        # The URL may hold a token: log only where it points.
        host = urllib.parse.urlsplit(url).hostname
        log.warning("alert webhook at %s failed: %s", host, exc)
