"""Crashes and concurrency with real processes: SIGKILLed relay and payment service, three relays at once."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg

from devstack.sqs import ensure_queues
from tests.helpers import outbox_count, poll, seed_events, seed_flight_events, start_service
from txoutbox.config import Settings


def _paid(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT flight_id) FROM public.payments").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def _leased(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM txoutbox.outbox WHERE locked_by IS NOT NULL").fetchone()
        assert row is not None
        return int(row[0])


def _frozen_holding_claims(proc: Any, database_url: str) -> bool:
    """SIGSTOP the process; keep it stopped only if it holds leased rows (else let it run on)."""
    proc.send_signal(signal.SIGSTOP)
    if _leased(database_url) > 0:
        return True
    proc.send_signal(signal.SIGCONT)
    return False


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_relay_killed_mid_publishing_everything_delivered_and_paid_once(
    settings: Settings, tmp_path: Path
) -> None:
    total = 20_000
    seed_flight_events(settings.database_url, total)
    log = tmp_path / "relay.log"
    relay = start_service(
        settings, "relay", log_path=log, TXOUTBOX_LEASE_SECONDS="2", TXOUTBOX_BATCH_SIZE="200"
    )
    assert poll(lambda: outbox_count(settings.database_url) < total - 1000, 30, interval=0.01), (
        log.read_text()
    )
    # Freeze the relay at a moment it holds claims, then kill it: a relay fast enough to be between claims at
    # an unlucky instant would otherwise be killed holding nothing, and the lease path would go untested.
    assert poll(lambda: _frozen_holding_claims(relay, settings.database_url), 10, interval=0.005), (
        log.read_text()[-2000:]
    )
    relay.send_signal(signal.SIGKILL)
    relay.wait(10)
    left = outbox_count(settings.database_url)
    assert 0 < left < total, f"the kill did not land mid-publishing ({left} left)"
    assert _leased(settings.database_url) > 0  # the dead relay's claims: they come back when the lease ends

    relay = start_service(settings, "relay", log_path=log, TXOUTBOX_LEASE_SECONDS="2")
    payments = start_service(settings, "payments", log_path=tmp_path / "payments.log")
    try:
        assert poll(lambda: outbox_count(settings.database_url) == 0, 60), log.read_text()[-2000:]
        assert poll(lambda: _paid(settings.database_url)[0] >= total, 90), _paid(settings.database_url)
        assert _paid(settings.database_url) == (total, total)
    finally:
        _stop(relay)
        _stop(payments)


def test_payment_service_killed_while_processing_messages_come_back_paid_once(
    settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    queues = ensure_queues(sqs, f"k{suffix}.fifo", f"kd{suffix}.fifo", visibility_timeout=2)
    total = 3_000
    for start in range(0, total, 10):
        sqs.send_message_batch(
            QueueUrl=queues.queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageGroupId": str(n),
                    "MessageDeduplicationId": uuid.uuid4().hex,
                    "MessageBody": json.dumps(
                        {
                            "eventId": str(uuid.uuid4()),
                            "eventType": "FlightBooked",
                            "aggregateType": "Flight",
                            "aggregateId": str(n),
                            "data": {"id": n},
                        }
                    ),
                }
                for i, n in enumerate(range(start + 1, start + 11))
            ],
        )
    from dataclasses import replace

    settings = replace(settings, sqs_queue_url=queues.queue_url, sqs_dlq_url=queues.dlq_url)
    log = tmp_path / "payments.log"
    payments = start_service(settings, "payments", log_path=log)
    assert poll(lambda: _paid(settings.database_url)[0] > 200, 30, interval=0.01), log.read_text()
    payments.send_signal(signal.SIGKILL)
    payments.wait(10)
    assert _paid(settings.database_url)[0] < total, "the kill did not land while processing"
    payments = start_service(settings, "payments", log_path=log)
    try:
        assert poll(lambda: _paid(settings.database_url)[0] >= total, 90), _paid(settings.database_url)
        assert _paid(settings.database_url) == (total, total)
    finally:
        _stop(payments)


def test_three_relays_2000_events_50_aggregates_all_arrive_in_order(
    settings: Settings, receive_all: Any, tmp_path: Path
) -> None:
    seed_events(settings.database_url, {f"agg-{i:02d}": 40 for i in range(50)})
    relays = [
        start_service(
            settings,
            "relay",
            log_path=tmp_path / f"relay{n}.log",
            TXOUTBOX_BATCH_SIZE="25",
            TXOUTBOX_WORKERS="2",
        )
        for n in range(3)
    ]
    try:
        assert poll(lambda: outbox_count(settings.database_url) == 0, 60)
    finally:
        for relay in relays:
            _stop(relay)
    messages = receive_all(settings.sqs_queue_url, 2000, timeout=60)
    seqs: dict[str, list[int]] = {}
    for message in messages:
        body = orjson.loads(message["Body"])
        seqs.setdefault(body["aggregateId"], []).append(body["data"]["seq"])
    assert sum(len(s) for s in seqs.values()) == 2000
    assert len(seqs) == 50
    out_of_order = {a: s for a, s in seqs.items() if s != list(range(40))}
    assert not out_of_order, out_of_order
    published = [
        sum(1 for line in (tmp_path / f"relay{n}.log").read_text().splitlines() if "stopped;" in line)
        for n in range(3)
    ]
    assert published == [1, 1, 1]  # all three ran and stopped cleanly
