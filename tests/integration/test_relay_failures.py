"""Per-event failures, dead letters, the circuit breaker and database restarts, with real parts.

Faults the real SQS-protocol server cannot produce on demand (one entry of a batch failing transiently)
are injected by wrapping the real publisher; broker-wide failures use the fauxqs fault switch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import pytest

from devstack.sqs import FauxqsProcess, set_fault
from tests.helpers import apoll, outbox_count, running_relay, seed_events, sqs_publisher
from txoutbox import Event, add_events, ops
from txoutbox.config import Settings
from txoutbox.publishers import EntryFailure, OutgoingMessage
from txoutbox.publishers.sqs import SqsPublisher


@pytest.fixture
def fault_switch(fauxqs: FauxqsProcess) -> Iterator[str]:
    yield fauxqs.fault_url
    set_fault(fauxqs.fault_url, "allow")


class FlakyPublisher(SqsPublisher):
    """The real SQS publisher, except that chosen aggregates' entries fail transiently."""

    def __init__(self, inner: SqsPublisher, failing: set[str], times: int | None = None) -> None:
        self.__dict__.update(inner.__dict__)
        self.failing = failing
        self.times = times
        self.calls = 0

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailure]:
        self.calls += 1
        bad = [i for i, m in enumerate(messages) if m.aggregate_id in self.failing]
        if self.times is not None and self.calls > self.times:
            bad = []
        ok = [m for i, m in enumerate(messages) if i not in bad]
        failures = [
            EntryFailure(i, "InternalError", "injected transient failure", permanent=False) for i in bad
        ]
        if ok:
            index = [i for i in range(len(messages)) if i not in bad]
            failures += [
                EntryFailure(index[f.index], f.code, f.message, f.permanent)
                for f in await super().send_batch(ok)
            ]
        return failures


def _rows(database_url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql).fetchall()


async def test_oversized_event_is_dead_lettered_others_flow_and_its_aggregate_waits(
    settings: Settings, receive_all: Any
) -> None:
    big = Event("Flight", "BIG", "FlightBooked", {"pad": "x" * (300 * 1024)})
    after = Event("Flight", "BIG", "FlightUpdated", {"seq": 1})
    others = [Event("Flight", f"O{i}", "FlightBooked", {"seq": i}) for i in range(100)]
    with psycopg.connect(settings.database_url) as conn:
        add_events(conn, [big, *others, after])
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 1, 15)
        dead = _rows(settings.database_url, "SELECT * FROM txoutbox.dead_letters")
        assert [(d["event_id"], d["attempts"]) for d in dead] == [(big.event_id, 1)]
        assert dead[0]["reason"].startswith("MessageTooLong: message is") and "262144" in dead[0]["reason"]
        waiting = _rows(settings.database_url, "SELECT event_id FROM txoutbox.outbox")
        assert [w["event_id"] for w in waiting] == [after.event_id]  # held behind its dead letter
        with ops.connect(settings.database_url) as conn:
            assert ops.outbox_list(conn, stuck=True)[0]["state"] == "held: earlier event dead-lettered"
            # Retrying puts it back first in its aggregate's order: still too big, dead again, still held.
            assert ops.dead_letters_retry(conn, dead[0]["id"]) == [dead[0]["id"]]
        assert await apoll(
            lambda: (
                _rows(settings.database_url, "SELECT attempts FROM txoutbox.dead_letters")
                == [{"attempts": 1}]
            ),
            10,
        )
        assert outbox_count(settings.database_url) == 1
        with ops.connect(settings.database_url) as conn:
            ops.dead_letter_discard(conn, dead[0]["id"])
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    bodies = [orjson.loads(m["Body"]) for m in receive_all(settings.sqs_queue_url, 101)]
    assert sorted(b["aggregateId"] for b in bodies) == sorted([*(f"O{i}" for i in range(100)), "BIG"])
    assert next(b for b in bodies if b["aggregateId"] == "BIG")["eventType"] == "FlightUpdated"


async def test_transient_failures_back_off_then_dead_letter_without_blocking_others(
    settings: Settings, receive_all: Any
) -> None:
    settings = replace(settings, relay=replace(settings.relay, max_attempts=3, poll_interval=0.05))
    seed_events(settings.database_url, {"FLAKY": 2, **{f"OK{i}": 3 for i in range(10)}})
    publisher = FlakyPublisher(sqs_publisher(settings), {"FLAKY"})
    async with running_relay(settings, publisher):
        assert await apoll(lambda: outbox_count(settings.database_url) == 1, 15)
        dead = _rows(
            settings.database_url, "SELECT aggregate_id, attempts, reason FROM txoutbox.dead_letters"
        )
    assert [(d["aggregate_id"], d["attempts"]) for d in dead] == [("FLAKY", 3)]
    assert (
        dead[0]["reason"] == "gave up after 3 attempts; last error: InternalError: injected transient failure"
    )
    held = _rows(settings.database_url, "SELECT aggregate_id, attempts, last_error FROM txoutbox.outbox")
    assert held == [{"aggregate_id": "FLAKY", "attempts": 0, "last_error": None}]  # never tried: order kept
    assert len(receive_all(settings.sqs_queue_url, 30)) == 30


async def test_transient_failure_records_attempt_error_and_backoff(settings: Settings) -> None:
    settings = replace(settings, relay=replace(settings.relay, retry_base_seconds=60, retry_cap_seconds=60))
    seed_events(settings.database_url, {"FLAKY": 1})
    async with running_relay(settings, FlakyPublisher(sqs_publisher(settings), {"FLAKY"})):
        assert await apoll(
            lambda: _rows(settings.database_url, "SELECT attempts FROM txoutbox.outbox") == [{"attempts": 1}],
            10,
        )
    row = _rows(
        settings.database_url,
        "SELECT last_error, next_attempt_at > now() AS later, "
        "next_attempt_at < now() + interval '61 s' AS capped, "
        "locked_by FROM txoutbox.outbox",
    )[0]
    assert row == {
        "last_error": "InternalError: injected transient failure",
        "later": True,
        "capped": True,
        "locked_by": None,
    }
    with ops.connect(settings.database_url) as conn:
        assert len(ops.outbox_retry(conn, None)) == 1
        assert _rows(
            settings.database_url, "SELECT next_attempt_at <= now() AS due FROM txoutbox.outbox"
        ) == [{"due": True}]


async def test_denied_broker_opens_circuit_without_burning_attempts(
    settings: Settings, fault_switch: str, caplog: pytest.LogCaptureFixture, receive_all: Any
) -> None:
    caplog.set_level(logging.INFO, "txoutbox.relay")
    set_fault(fault_switch, "deny")
    seed_events(settings.database_url, {f"D{i}": 2 for i in range(30)})
    async with running_relay(settings) as relay:
        assert await apoll(lambda: relay.metrics.broker_errors._value.get() >= 3, 10)
        assert _rows(
            settings.database_url, "SELECT max(attempts) AS a, count(*) AS n FROM txoutbox.outbox"
        ) == [{"a": 0, "n": 60}]
        live = _rows(settings.database_url, "SELECT circuit_state, circuit_reason FROM txoutbox.relays")
        assert (
            live[0]["circuit_state"] in ("open", "half-open") and "AccessDenied" in live[0]["circuit_reason"]
        )
        set_fault(fault_switch, "allow")
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        len(errors) == 1
        and "AccessDenied" in errors[0].getMessage()
        and "60 events waiting" in errors[0].getMessage()
    )
    assert any("circuit closed" in r.getMessage() for r in caplog.records)
    assert len(receive_all(settings.sqs_queue_url, 60)) == 60


async def test_relay_and_payments_survive_a_postgres_restart(
    tmp_path: Any, queues: Any, fauxqs: FauxqsProcess
) -> None:
    from devstack.postgres import LocalPostgres
    from tests.helpers import seed_flight_events
    from tests.integration.test_payments_consumer import consuming
    from txoutbox.migrate import apply_migrations

    def paid(url: str) -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(DISTINCT flight_id) FROM public.payments").fetchone()
            return int(row[0]) if row else 0

    pg = LocalPostgres(tmp_path / "pg").start()
    try:
        url = pg.url()
        apply_migrations(url)
        settings = Settings(
            url,
            queues.queue_url,
            queues.dlq_url,
            fauxqs.endpoint_url,
            "eu-west-1",
            True,
            relay=replace(Settings.from_env({"DATABASE_URL": url}).relay, poll_interval=0.2),
        )
        seed_flight_events(url, 5)
        async with running_relay(settings), consuming(settings):
            assert await apoll(lambda: paid(url) == 5, 15)
            pg.stop()
            pg = LocalPostgres(tmp_path / "pg").start()
            seed_flight_events(url, 5, start=6)
            assert await apoll(lambda: paid(url) == 10, 40)
            assert outbox_count(url) == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM public.payments").fetchone() == (10,)
    finally:
        pg.stop()


async def test_alert_webhook_gets_one_post_per_state_change_across_relays(
    settings: Settings, fault_switch: str
) -> None:
    import http.server
    import json as jsonlib
    import threading

    received: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = replace(
        settings,
        relay=replace(
            settings.relay,
            alert_webhook_url=f"http://127.0.0.1:{server.server_port}/hook",
            heartbeat_seconds=0.1,
        ),
    )
    try:
        set_fault(fault_switch, "deny")
        seed_events(settings.database_url, {"W": 3})
        async with running_relay(settings), running_relay(settings):
            assert await apoll(lambda: len(received) >= 1, 10)
            assert received[0]["state"] == "degraded" and received[0]["circuit"] in ("open", "half-open")
            assert received[0]["backlog"] == 3
            set_fault(fault_switch, "allow")
            assert await apoll(lambda: outbox_count(settings.database_url) == 0, 15)
            assert await apoll(lambda: len(received) >= 2, 10)
            await apoll(lambda: False, 1.0)  # a second of heartbeats from both relays: no more POSTs
        assert [r["state"] for r in received] == ["degraded", "recovered"]
        # Recovered: every relay's circuit closed; events may still be draining (backlog at the flip).
        assert received[1]["circuit"] == "closed" and received[1]["reasons"] == []
    finally:
        server.shutdown()
