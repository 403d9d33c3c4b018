"""The walkthrough's failure path: SQS denied or down while bookings keep arriving."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import Stack, wait
from tests.helpers import poll


def _metric(stack: Stack, client: httpx.Client, name: str) -> float:
    text = client.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def test_sqs_denied_booking_succeeds_event_waits_then_drains(stack: Stack, client: httpx.Client) -> None:
    stack.start()
    assert "AccessDenied" in stack.cli("fault", "sqs", "deny").stdout
    mark = len(stack.lines)
    flight = stack.book(client)

    error = stack.wait_for_line("circuit open", 3, start=mark)
    assert error is not None and error.startswith("relay") and "AccessDenied" in error, stack.output()
    assert "1 events waiting" in error
    waiting = json.loads(stack.cli("outbox", "list", "--json").stdout)
    assert [(e["aggregate_id"], e["attempts"]) for e in waiting] == [(str(flight["id"]), 0)]
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["outbox"]["circuit"] == "open" and status["status"] == "degraded"
    health = client.get(f"{stack.api}/health")
    assert health.status_code == 200 and health.json()["outbox"]["backlog"] == 1

    stack.cli("fault", "sqs", "allow")
    assert poll(lambda: json.loads(stack.cli("outbox", "list", "--json").stdout) == [], 10), stack.output()
    assert poll(lambda: len(json.loads(stack.cli("payments", "list", "--json").stdout)) == 1, 10)
    payments = json.loads(stack.cli("payments", "list", "--json").stdout)
    assert [p["flight_id"] for p in payments] == [flight["id"]]
    assert stack.wait_for_line("circuit closed", 5, start=mark), stack.output()
    relay_errors = [line for line in stack.lines[mark:] if line.startswith("relay") and " ERROR " in line]
    assert len(relay_errors) == 1, relay_errors  # one error for the outage, not one per attempt


def test_sqs_down_30s_under_500_bookings_nothing_lost_circuit_holds(
    stack: Stack, client: httpx.Client
) -> None:
    stack.start()
    stack.cli("fault", "sqs", "down")
    down_at = time.monotonic()

    def book(i: int) -> int:
        with httpx.Client(timeout=10) as c:
            return int(stack.book(c, day=1 + i % 28, departure=f"City{i}")["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(book, range(500)))
    assert len(set(ids)) == 500

    assert poll(lambda: _metric(stack, client, "txoutbox_backlog") == 500, 10)
    first_age = client.get(f"{stack.api}/health").json()["outbox"]["oldest_age_seconds"]
    wait(max(0.0, 30 - (time.monotonic() - down_at)))  # keep SQS down for 30 s
    health = client.get(f"{stack.api}/health").json()
    assert health["outbox"]["backlog"] == 500 and health["outbox"]["oldest_age_seconds"] > first_age
    assert health["status"] == "degraded"
    assert _metric(stack, client, "txoutbox_oldest_event_age_seconds") > 5
    calls_during_outage = _metric(stack, client, "txoutbox_broker_unavailable_total")
    assert 1 <= calls_during_outage < 20, calls_during_outage  # vs 500 events: the circuit held

    stack.cli("fault", "sqs", "up")
    assert poll(
        lambda: len(json.loads(stack.cli("payments", "list", "--json", "--limit", "1000").stdout)) >= 500, 40
    ), stack.output()[-3000:]
    payments = json.loads(stack.cli("payments", "list", "--json", "--limit", "1000").stdout)
    assert sorted(p["flight_id"] for p in payments) == sorted(ids)  # every flight paid, exactly once
    assert poll(lambda: _metric(stack, client, "txoutbox_backlog") == 0, 10)
    assert poll(lambda: client.get(f"{stack.api}/health").json()["status"] == "ok", 10)
    assert client.get(f"{stack.api}/health").json()["outbox"]["oldest_age_seconds"] == 0
