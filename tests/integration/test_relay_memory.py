"""The relay's memory is bounded by bytes, not rows: huge payloads are dead-lettered without being loaded."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg

from tests.helpers import poll, start_service
from txoutbox.config import Settings

EVENTS = int(os.environ.get("TXOUTBOX_TEST_BIG_EVENTS", "200"))
PAYLOAD_BYTES = 5 * 1024 * 1024


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _dead_letters(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT reason FROM txoutbox.dead_letters").fetchall()]


def test_huge_payloads_are_dead_lettered_and_the_relay_stays_small(
    settings: Settings, tmp_path: Path
) -> None:
    # Written server-side (the same rows add_events writes; 1 GB through the client would take a minute).
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload) "
            "WITH p AS MATERIALIZED (SELECT jsonb_build_object('pad', repeat('x', %(bytes)s)) AS payload) "
            "SELECT gen_random_uuid(), 'Big', 'B' || n, 'Huge', p.payload "
            "FROM generate_series(1, %(events)s) AS n, p",
            {"bytes": PAYLOAD_BYTES, "events": EVENTS},
        )
    relay = start_service(settings, "relay", log_path=tmp_path / "relay.log")
    try:
        assert poll(lambda: len(_dead_letters(settings.database_url)) == EVENTS, 120), (
            tmp_path / "relay.log"
        ).read_text()[-2000:]
        peak = _peak_rss_mb(relay.pid)
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    print(f"relay peak RSS {peak:.0f} MiB for {EVENTS} events of {PAYLOAD_BYTES} bytes")
    assert peak < 150, f"relay peak RSS {peak:.0f} MiB"
    reasons = _dead_letters(settings.database_url)
    assert all(r.startswith("MessageTooLong: message is over") for r in reasons), reasons[:3]
