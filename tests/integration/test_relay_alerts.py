"""Alert delivery: retried until the webhook accepts it, on a task of its own, never leaking the URL."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from devstack.sqs import FauxqsProcess, set_fault
from tests.helpers import apoll, running_relay, seed_events, service_env
from txoutbox.config import Settings


class Webhook:
    """A local webhook receiver: answers `fail_first` POSTs with 503, and holds each POST while `gate` is
    clear."""

    def __init__(self, fail_first: int = 0) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.fail_first = fail_first
        self.gate = threading.Event()
        self.gate.set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.gate.wait(30)
                if hook.refused < hook.fail_first:
                    hook.refused += 1
                    self.send_response(503)
                else:
                    hook.accepted.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=S3CRET"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def fault_switch(fauxqs: FauxqsProcess) -> Iterator[str]:
    yield fauxqs.fault_url
    set_fault(fauxqs.fault_url, "allow")


def _with_hook(settings: Settings, url: str) -> Settings:
    return replace(settings, relay=replace(settings.relay, alert_webhook_url=url, heartbeat_seconds=0.2))


async def test_a_refused_alert_is_retried_until_accepted_and_the_url_never_logged(
    settings: Settings, webhook: Webhook, fault_switch: str, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.fail_first = 2
    set_fault(fault_switch, "deny")
    seed_events(settings.database_url, {"W": 1})
    async with running_relay(_with_hook(settings, webhook.url)):
        assert await apoll(lambda: webhook.accepted, 20)
    assert webhook.refused == 2
    assert [a["state"] for a in webhook.accepted] == ["degraded"]
    assert "S3CRET" not in caplog.text and "/hook" not in caplog.text
    assert "alert webhook at 127.0.0.1 failed (503)" in caplog.text


async def test_a_slow_webhook_never_holds_up_the_heartbeat(
    settings: Settings, webhook: Webhook, fault_switch: str
) -> None:
    def heartbeat_at() -> Any:
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("SELECT max(heartbeat_at) FROM txoutbox.relays").fetchone()
        return row[0] if row else None

    webhook.gate.clear()  # every POST hangs until the test lets it go
    set_fault(fault_switch, "deny")
    seed_events(settings.database_url, {"W": 1})
    async with running_relay(_with_hook(settings, webhook.url)):
        assert await apoll(lambda: heartbeat_at() is not None, 10)
        # The circuit opened, the alert flipped and its POST is hanging; heartbeats keep coming.
        assert await apoll(lambda: _alert_state(settings.database_url) == ("degraded", "ok"), 10)
        seen = heartbeat_at()
        assert await apoll(lambda: heartbeat_at() > seen, 3)
        webhook.gate.set()
        assert await apoll(lambda: webhook.accepted, 10)
    assert _alert_state(settings.database_url) == ("degraded", "degraded")


def _alert_state(database_url: str) -> tuple[str, str] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT state, notified_state FROM txoutbox.alerts WHERE name = 'outbox'"
        ).fetchone()
    return (row[0], row[1]) if row else None


def test_webhook_url_without_scheme_is_one_sentence_at_start_without_the_url(settings: Settings) -> None:
    import sys
    from pathlib import Path

    result = subprocess.run(
        [str(Path(sys.executable).parent / "txoutbox"), "relay"],
        env=service_env(settings, ALERT_WEBHOOK_URL="hooks.example.com/services/T0KEN"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: ALERT_WEBHOOK_URL must be an http:// or https:// URL with a host"
    ]
    assert "T0KEN" not in result.stdout + result.stderr
