"""The circuit after an outage and on a misconfigured broker, with two relays, the real fauxqs and its
fault switch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from devstack.sqs import FauxqsProcess, set_fault
from tests.helpers import apoll, outbox_count, running_relay, seed_events
from txoutbox.config import Settings
from txoutbox.health import read_health_sync
from txoutbox.publishers.sqs import SqsPublisher


@pytest.fixture
def fault_switch(fauxqs: FauxqsProcess) -> Iterator[str]:
    yield fauxqs.fault_url
    set_fault(fauxqs.fault_url, "allow")


def _health(settings: Settings) -> dict[str, Any]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return read_health_sync(conn, settings)


def _attempts_and_dead(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT COALESCE(max(attempts), 0), count(*), (SELECT count(*) FROM txoutbox.dead_letters) "
            "FROM txoutbox.outbox"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def test_after_an_outage_both_relays_close_their_circuits_even_with_nothing_left(
    settings: Settings, fault_switch: str
) -> None:
    # One aggregate: only one relay can hold its events, so the other one probes with an empty claim.
    set_fault(fault_switch, "deny")
    seed_events(settings.database_url, {"ONE": 3})
    async with running_relay(settings) as a, running_relay(settings) as b:
        assert await apoll(lambda: not a.circuit.closed and not b.circuit.closed, 10)
        set_fault(fault_switch, "allow")
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 15)
        assert await apoll(lambda: a.circuit.closed and b.circuit.closed, 10), (
            a.circuit.state,
            b.circuit.state,
        )
        health = await apoll(lambda: (h := _health(settings))["status"] == "ok" and h, 10)
        assert health and health["outbox"]["circuit"] == "closed", _health(settings)


async def test_a_missing_queue_opens_the_circuit_with_its_reason_and_burns_no_attempt(
    settings: Settings,
) -> None:
    assert settings.sqs_queue_url
    missing = replace(
        settings, sqs_queue_url=settings.sqs_queue_url.replace("/q", f"/gone{uuid.uuid4().hex[:6]}")
    )
    seed_events(settings.database_url, {f"M{i}": 2 for i in range(5)})
    async with running_relay(missing) as relay:
        assert await apoll(lambda: relay.metrics.broker_errors._value.get() >= 2, 10)
        assert not relay.circuit.closed and "NonExistentQueue" in (relay.circuit.reason or "")
        assert _attempts_and_dead(settings.database_url) == (0, 10, 0)


async def test_a_standard_queue_opens_the_circuit_before_any_event_goes_to_it(
    settings: Settings, sqs: Any
) -> None:
    standard = sqs.create_queue(QueueName=f"std{uuid.uuid4().hex[:8]}")["QueueUrl"]
    seed_events(settings.database_url, {f"N{i}": 2 for i in range(5)})
    async with running_relay(replace(settings, sqs_queue_url=standard)) as relay:
        assert await apoll(lambda: relay.metrics.broker_errors._value.get() >= 2, 10)
        assert not relay.circuit.closed and "QueueNotFifo" in (relay.circuit.reason or "")
        assert _attempts_and_dead(settings.database_url) == (0, 10, 0)
        health = await apoll(lambda: (h := _health(settings))["reasons"] and h, 10)
        assert health and "QueueNotFifo" in " ".join(health["reasons"])
    received = sqs.receive_message(QueueUrl=standard, MaxNumberOfMessages=10).get("Messages", [])
    assert received == []


class _ProbeBreaksOnce(SqsPublisher):
    """The real publisher, whose next probe fails in a way no handler expects (a client library's bug):
    a fault fauxqs cannot produce."""

    break_next_probe = False

    async def probe(self) -> None:
        if self.break_next_probe:
            self.break_next_probe = False
            raise RuntimeError("unexpected failure inside the probe")
        await super().probe()


async def test_a_probe_that_fails_unexpectedly_does_not_leave_the_circuit_half_open(
    settings: Settings, fault_switch: str
) -> None:
    # Left half-open by the failed probe, no loop of the relay ever probed or claimed again: it sat idle
    # with a backlog, using no CPU.
    assert settings.sqs_queue_url
    publisher = _ProbeBreaksOnce(
        settings.sqs_queue_url,
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        local_credentials=True,
        timeout_seconds=2,
    )
    set_fault(fault_switch, "deny")
    seed_events(settings.database_url, {f"H{i}": 2 for i in range(5)})
    async with running_relay(settings, publisher) as relay:
        assert await apoll(lambda: not relay.circuit.closed, 10)
        publisher.break_next_probe = True
        set_fault(fault_switch, "allow")
        assert await apoll(lambda: not publisher.break_next_probe, 15)  # the probe broke
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 15), relay.circuit.state
        assert relay.circuit.closed
