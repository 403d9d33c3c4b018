"""Database statements are bounded by timeouts, and what retrying cannot fix is surfaced, not looped."""

from __future__ import annotations

import logging
from collections import Counter

import psycopg
import pytest

from tests.helpers import apoll, outbox_count, running_relay, seed_events, sqs_publisher
from tests.integration.test_relay_leases import SlowPublisher
from txoutbox.config import Settings
from txoutbox.connections import DbTimeouts


def test_every_connection_carries_the_timeouts() -> None:
    conninfo = DbTimeouts(connect_seconds=3, statement_seconds=1.5, lock_seconds=0.25).apply(
        "postgresql://u@h/db?options=-c%20search_path%3Dapp"
    )
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    assert params["connect_timeout"] == "3"
    assert params["options"] == "-c search_path=app -c statement_timeout=1500 -c lock_timeout=250"


async def test_an_acknowledgement_stuck_on_a_lock_is_bounded_and_surfaced_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "txoutbox.relay")
    monkeypatch.setenv("TXOUTBOX_DB_LOCK_TIMEOUT", "0.2")
    seed_events(settings.database_url, {"LOCKED": 1})
    sent: Counter[str] = Counter()
    with psycopg.connect(settings.database_url) as holder:
        async with running_relay(settings, SlowPublisher(sqs_publisher(settings), 0.5, sent)):
            # The event is claimed (a lease, no lock) and being sent: now another session locks its row,
            # so the relay's DELETE after the send waits on it.
            assert await apoll(
                lambda: (
                    holder.execute(
                        "SELECT count(*) FROM txoutbox.outbox WHERE locked_by IS NOT NULL"
                    ).fetchone()
                    == (1,)
                ),
                10,
            )
            holder.execute("SELECT id FROM txoutbox.outbox FOR UPDATE")
            assert await apoll(lambda: _errors(caplog), 15), "the acknowledgement never gave up"
            # The relay goes on with other work meanwhile.
            seed_events(settings.database_url, {"OTHER": 1})
            assert await apoll(lambda: outbox_count(settings.database_url) == 1 and len(sent) == 2, 10)
            holder.rollback()
    [error] = _errors(caplog)
    assert "LockNotAvailable" in error and "after 5 tries" in error


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
