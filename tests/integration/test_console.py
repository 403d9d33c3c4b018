"""The console's JSON API against the real database, fauxqs queues and fault switch."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.helpers import apoll, poll, running_relay, seed_events
from txoutbox import Event, add_events
from txoutbox.config import Settings
from txoutbox.console import queries as console_queries
from txoutbox.console.app import create_app

PORT = 18081  # only named in the Host header: TestClient calls the app in-process


def _client(settings: Settings, **kwargs: Any) -> TestClient:
    app = create_app(settings, port=PORT, sample_seconds=0.1, **kwargs)
    return TestClient(app, base_url=f"http://127.0.0.1:{PORT}")


@pytest.fixture
def console(settings: Settings) -> Iterator[TestClient]:
    with _client(settings) as client:
        yield client


def _csrf(client: TestClient) -> str:
    page = client.get("/")
    assert page.status_code == 200
    token: str = client.app.state.guard.csrf_token  # type: ignore[attr-defined]
    assert f'content="{token}"' in page.text
    return token


def _post(client: TestClient, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post(
        path,
        content=json.dumps(body or {}),
        headers={"Content-Type": "application/json", "X-CSRF-Token": _csrf(client), **headers},
    )


def _relays(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/api/overview").json()["relays"]  # type: ignore[no-any-return]


def _series(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/api/overview").json()["series"]  # type: ignore[no-any-return]


def test_console_queries_prepare(conn: psycopg.Connection[Any]) -> None:
    from txoutbox.queries import as_positional

    sql, _ = as_positional(console_queries.RELAYS)
    conn.execute(f"PREPARE console_relays AS {sql}")


def test_overview_samples_backlog_and_oldest_age(console: TestClient, settings: Settings) -> None:
    seed_events(settings.database_url, {"a": 3, "b": 2})
    series = poll(lambda: [p for p in console.get("/api/overview").json()["series"] if p["backlog"] == 5], 10)
    assert series, console.get("/api/overview").json()
    assert series[-1]["oldest_age_seconds"] > 0 and series[-1]["publish_rate"] == 0
    overview = console.get("/api/overview").json()
    assert overview["outbox"]["backlog"] == 5 and overview["relays"] == [] and overview["local_stack"]
    assert overview["window_seconds"] == 900


async def test_relay_row_shows_circuit_and_publish_rate(console: TestClient, settings: Settings) -> None:
    fast = replace(settings, relay=replace(settings.relay, heartbeat_seconds=0.2))
    async with running_relay(fast):
        seed_events(settings.database_url, {"a": 50})
        relays = await apoll(lambda: [r for r in _relays(console) if r["published_total"] == 50], 15)
        assert relays, console.get("/api/overview").json()
        assert relays[0]["live"] and relays[0]["circuit_state"] == "closed"
        assert relays[0]["heartbeat_age_seconds"] < 5
        # the 50 events went out between heartbeats: the samples after that show a rate above zero
        rates = await apoll(lambda: [p["publish_rate"] for p in _series(console) if p["publish_rate"]], 5)
        assert rates and all(r > 0 for r in rates)


async def test_dead_letter_payload_retry_and_discard(console: TestClient, settings: Settings) -> None:
    async with running_relay(settings):
        with psycopg.connect(settings.database_url) as conn:  # over SQS's 256 KiB: refused for good
            add_events(conn, [Event("Flight", "big", "FlightBooked", {"pad": "x" * 300_000})])
        dead = await apoll(lambda: console.get("/api/dead-letters").json(), 10)
    assert [(d["aggregate_id"], d["attempts"]) for d in dead] == [("big", 1)]
    assert "over the queue's limit" in dead[0]["reason"] and dead[0]["payload_bytes"] > 300_000
    shown = console.get(f"/api/dead-letters/{dead[0]['id']}").json()
    assert json.loads(shown["payload"]) == {"pad": "x" * 300_000}

    retried = _post(console, f"/api/dead-letters/{dead[0]['id']}/retry")
    assert retried.status_code == 200 and retried.json() == {"requeued": [dead[0]["id"]]}
    assert console.get("/api/dead-letters").json() == []
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT id FROM txoutbox.outbox").fetchall() == [(dead[0]["id"],)]
        conn.execute(  # dead-lettered again (as the relay would: it is still too big), to discard it
            "INSERT INTO txoutbox.dead_letters (id, event_id, aggregate_type, aggregate_id, event_type,"
            " payload, created_at, attempts, reason) SELECT id, event_id, aggregate_type, aggregate_id,"
            " event_type, payload, created_at, 1, 'refused' FROM txoutbox.outbox; DELETE FROM txoutbox.outbox"
        )
    assert _post(console, f"/api/dead-letters/{dead[0]['id']}/discard").json() == {"discarded": dead[0]["id"]}
    assert console.get("/api/dead-letters").json() == []
    missing = _post(console, f"/api/dead-letters/{dead[0]['id']}/discard")
    assert missing.status_code == 404 and "no dead letter" in missing.json()["detail"]


def test_outbox_lists_retry_waits_with_last_error_and_retries_now(
    console: TestClient, settings: Settings
) -> None:
    seed_events(settings.database_url, {"a": 1})
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "UPDATE txoutbox.outbox SET attempts = 2, last_error = 'Throttled: slow down',"
            " next_attempt_at = now() + interval '1 hour'"
        )
    [waiting] = console.get("/api/outbox").json()
    assert (waiting["state"], waiting["last_error"], waiting["attempts"]) == (
        "retry scheduled",
        "Throttled: slow down",
        2,
    )
    assert _post(console, f"/api/outbox/{waiting['id']}/retry").json() == {"due_now": [waiting["id"]]}
    assert console.get("/api/outbox").json()[0]["state"] == "ready"


def test_payment_dlq_lists_and_redrives(console: TestClient, settings: Settings, sqs: Any) -> None:
    assert settings.sqs_dlq_url and settings.sqs_queue_url
    sqs.send_message(
        QueueUrl=settings.sqs_dlq_url,
        MessageBody='{"id": 7}',
        MessageGroupId="7",
        MessageDeduplicationId="d7",
        MessageAttributes={"eventType": {"DataType": "String", "StringValue": "FlightBooked"}},
    )
    listed = console.get("/api/dlq").json()
    assert listed["configured"]
    assert [(m["group_id"], m["body"]) for m in listed["messages"]] == [("7", '{"id": 7}')]
    assert _post(console, "/api/dlq/redrive").json() == {"redriven": 1}
    got = sqs.receive_message(QueueUrl=settings.sqs_queue_url, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in got] == ['{"id": 7}']
    assert console.get("/api/dlq").json()["messages"] == []


def test_without_dlq_the_console_says_so(settings: Settings) -> None:
    with _client(replace(settings, sqs_dlq_url=None, fault_url=None)) as client:
        assert client.get("/api/dlq").json() == {"configured": False, "messages": []}
        assert client.get("/api/fault").json() == {"available": False, "mode": None}
        refused = _post(client, "/api/fault", {"mode": "deny"})
        assert refused.status_code == 409 and "local stack" in refused.json()["detail"]


def test_fault_switch(console: TestClient) -> None:
    try:
        assert _post(console, "/api/fault", {"mode": "deny"}).json() == {"available": True, "mode": "deny"}
        assert console.get("/api/fault").json()["mode"] == "deny"
        bad = _post(console, "/api/fault", {"mode": "explode"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "mode"]
    finally:
        assert _post(console, "/api/fault", {"mode": "allow"}).json()["mode"] == "allow"


def test_posts_need_json_csrf_token_and_same_origin(console: TestClient, settings: Settings) -> None:
    seed_events(settings.database_url, {"a": 1})
    token = _csrf(console)
    url = "/api/outbox/1/retry"
    no_token = console.post(url, content="{}", headers={"Content-Type": "application/json"})
    assert no_token.status_code == 403 and "X-CSRF-Token" in no_token.json()["detail"]
    form = console.post(url, data={"x": "1"}, headers={"X-CSRF-Token": token})
    assert form.status_code == 415
    foreign = _post(console, url, Origin="http://evil.example")
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["detail"]
    cross = _post(console, url, **{"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    same = _post(console, url, Origin=f"http://127.0.0.1:{PORT}", **{"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200
    no_body = console.post(url, headers={"Content-Type": "application/json", "X-CSRF-Token": token})
    assert no_body.status_code == 422


def test_foreign_host_header_is_refused_and_headers_are_set(console: TestClient) -> None:
    rebound = console.get("/api/overview", headers={"Host": "attacker.example:18081"})
    assert rebound.status_code == 421
    page = console.get("/")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/console.js", "/static/console.css"):
        assert console.get(asset).status_code == 200
        assert f'"{asset}"' in page.text
    assert "http" not in page.text.replace("http://www.w3.org", "")  # no asset from elsewhere


def test_token_required_beyond_loopback(settings: Settings) -> None:
    with _client(settings, loopback=False, access_token="s3cret") as client:
        refused = client.get("/api/overview", headers={"Host": "console.internal:8081"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert "s3cret" not in refused.text
        wrong = client.get("/api/overview", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bearer = client.get("/api/overview", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        basic = base64.b64encode(b"ops:s3cret").decode()
        assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_unreachable_database_is_a_503_not_a_traceback(settings: Settings) -> None:
    gone = replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with _client(gone) as client:
        client.app.state.console.pool.timeout = 1  # type: ignore[attr-defined]
        answer = client.get("/api/dead-letters")
        assert answer.status_code == 503 and "cannot reach the database" in answer.json()["detail"]


def test_unmigrated_database_says_so(settings: Settings, postgres: Any) -> None:
    empty = postgres.ensure_database(f"e_{uuid.uuid4().hex[:12]}")
    with _client(replace(settings, database_url=empty)) as client:
        answer = client.get("/api/overview")
        assert answer.status_code == 503 and "txoutbox migrate" in answer.json()["detail"]
        assert poll(lambda: client.app.state.console.database_error, 5)  # type: ignore[attr-defined]


def test_cli_refuses_a_public_host_without_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "txoutbox"), "console", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TXOUTBOX_HOME": str(tmp_path)},
        timeout=30,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "TXOUTBOX_CONSOLE_TOKEN" in result.stderr, result.stderr
