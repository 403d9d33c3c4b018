"""Retention and replay on the real PostgreSQL and fauxqs: the relay archives published events into daily
partitions that expire whole; `txoutbox published list` and `txoutbox replay` read them back."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from devstack.sqs import ensure_queues
from tests.helpers import (
    apoll,
    outbox_count,
    poll,
    running,
    running_relay,
    seed_events,
    service_env,
    start_service,
)
from txoutbox import retention
from txoutbox.config import Settings
from txoutbox.consumer import Consumer, InboundEvent

TXOUTBOX = str(Path(sys.executable).parent / "txoutbox")
TODAY = dt.datetime.now(dt.UTC).date()


def keeping(settings: Settings, days: int = 7) -> Settings:
    return replace(settings, relay=replace(settings.relay, retention_days=days))


def partitions(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'txoutbox.published'::regclass ORDER BY 1"
            ).fetchall()
        ]


def archived(database_url: str, table: str = "txoutbox.published") -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            f"SELECT event_id, aggregate_id, tableoid::regclass::text FROM {table} ORDER BY id"
        ).fetchall()


@pytest.fixture
def cli(settings: Settings) -> Any:
    def run(*args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [TXOUTBOX, *args], capture_output=True, text=True, env=service_env(settings, **env), timeout=120
        )
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    return run


async def test_relay_moves_published_events_into_todays_partition(settings: Settings) -> None:
    events = seed_events(settings.database_url, {"A": 3, "B": 2})
    async with running_relay(keeping(settings)):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
        # the relay's side job made the days' partitions at start
        assert await apoll(lambda: retention.partition_name(TODAY) in partitions(settings.database_url), 5)
    rows = archived(settings.database_url)
    assert {r[0] for r in rows} == {e.event_id for e in events}
    assert {r[2] for r in rows} <= {
        f"txoutbox.{retention.partition_name(TODAY)}",
        "txoutbox.published_default",
    }
    with psycopg.connect(settings.database_url) as conn:
        report = retention.maintain(conn, 7)
    assert report.default_rows == 0  # anything acknowledged before the partition existed moved into it
    assert {r[2] for r in archived(settings.database_url)} == {f"txoutbox.{retention.partition_name(TODAY)}"}


async def test_without_retention_published_events_are_deleted(settings: Settings) -> None:
    seed_events(settings.database_url, {"A": 2})
    async with running_relay(settings):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    assert archived(settings.database_url) == []
    assert partitions(settings.database_url) == ["published_default"]


def _archive(conn: psycopg.Connection[Any], day: dt.date, aggregate: str, n: int) -> None:
    at = dt.datetime.combine(day, dt.time(12), dt.UTC)
    for i in range(n):
        conn.execute(
            "INSERT INTO txoutbox.published (id, event_id, aggregate_type, aggregate_id, event_type, "
            "payload, created_at, published_at) "
            "VALUES ((SELECT coalesce(max(id), 0) + 1 FROM txoutbox.published), "
            "%s, 'Flight', %s, 'FlightBooked', %s, %s, %s)",
            (uuid.uuid4(), aggregate, json.dumps({"seq": i}), at, at),
        )


def test_expired_days_are_dropped_whole_and_stray_rows_get_their_partition(database_url: str) -> None:
    old = TODAY - dt.timedelta(10)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _archive(conn, old, "old", 2)  # no partition for that day: the default partition catches them
        _archive(conn, TODAY, "new", 1)
        assert len(archived(database_url, "txoutbox.published_default")) == 3
        # 20 days kept: the stray day gets its partition and keeps its rows
        report = retention.maintain(conn, 20)
        assert retention.partition_name(old) in report.created and not report.dropped
        assert report.default_rows == 0
        assert [r[2] for r in archived(database_url)] == [f"txoutbox.{retention.partition_name(old)}"] * 2 + [
            f"txoutbox.{retention.partition_name(TODAY)}"
        ]
        ahead = [
            retention.partition_name(TODAY + dt.timedelta(n)) for n in range(1, retention.AHEAD_DAYS + 1)
        ]
        assert set(ahead) <= set(partitions(database_url))
        # 7 days kept: the old day is dropped as a table
        report = retention.maintain(conn, 7)
        assert report.dropped == [retention.partition_name(old)]
        assert retention.partition_name(old) not in partitions(database_url)
        assert [r[1] for r in archived(database_url)] == ["new"]
        assert retention.maintain(conn, 7).dropped == []  # idempotent
        # time passes: today's partition expires too (maintenance run as if 8 days later)
        later = retention.maintain(conn, 7, today=TODAY + dt.timedelta(8))
        assert retention.partition_name(TODAY) in later.dropped
        assert archived(database_url) == []


def test_a_relay_process_configured_by_environment_archives_cloudevents(
    settings: Settings, receive_all: Any
) -> None:
    events = seed_events(settings.database_url, {"A": 2})
    relay = start_service(
        settings,
        "relay",
        TXOUTBOX_RETENTION_DAYS="3",
        TXOUTBOX_MESSAGE_FORMAT="cloudevents",
        TXOUTBOX_POLL_INTERVAL="0.2",
    )
    try:
        assert poll(lambda: len(archived(settings.database_url)) == 2, 30)
    finally:
        relay.terminate()
        relay.wait(30)
    assert {r[0] for r in archived(settings.database_url)} == {e.event_id for e in events}
    bodies = [orjson.loads(m["Body"]) for m in receive_all(settings.sqs_queue_url, 2)]
    assert [(b["specversion"], b["subject"]) for b in bodies] == [("1.0", "A"), ("1.0", "A")]


def test_retention_command(cli: Any, settings: Settings) -> None:
    out = json.loads(cli("retention", "--days", "3", "--json").stdout)
    assert retention.partition_name(TODAY) in out["created"] and out["dropped"] == []
    result = cli("retention", code=1)  # TXOUTBOX_RETENTION_DAYS unset: off
    assert "retention is off" in result.stderr and len(result.stderr.strip().splitlines()) <= 2


async def _publish_archived(settings: Settings, per_aggregate: dict[str, int]) -> list[Any]:
    events = seed_events(settings.database_url, per_aggregate)
    async with running_relay(keeping(settings)):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    return events


async def test_published_list_filters_and_json(settings: Settings, cli: Any) -> None:
    await _publish_archived(settings, {"A": 3, "B": 2})
    rows = json.loads(cli("published", "list", "--json").stdout)
    assert [r["aggregate_id"] for r in rows] == ["A", "B", "A", "B", "A"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert len(json.loads(cli("published", "list", "--aggregate", "B", "--json").stdout)) == 2
    assert json.loads(cli("published", "list", "--type", "Other", "--json").stdout) == []
    assert (
        len(
            json.loads(
                cli("published", "list", "--aggregate-type", "Flight", "--limit", "2", "--json").stdout
            )
        )
        == 2
    )
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert json.loads(cli("published", "list", "--since", future, "--json").stdout) == []
    assert len(json.loads(cli("published", "list", "--until", future, "--json").stdout)) == 5
    table = cli("published", "list").stdout
    assert "aggregate_id" in table and "(5 rows)" in table
    bad = cli("published", "list", "--since", "yesterday-ish", code=2)
    assert "ISO-8601" in bad.stderr


async def test_replay_in_order_marked_with_dry_run_and_rate(
    settings: Settings, cli: Any, sqs: Any, receive_all: Any
) -> None:
    await _publish_archived(settings, {"A": 4, "B": 3, "C": 2})
    suffix = uuid.uuid4().hex[:10]
    target = ensure_queues(sqs, f"replay{suffix}.fifo", f"replaydlq{suffix}.fifo").queue_url

    dry = cli("replay", "--queue-url", target, "--aggregate", "A", "--dry-run")
    assert "dry run: 4 event(s) would be replayed" in dry.stdout
    assert (
        sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "0"
    )

    started = time.monotonic()
    result = cli(
        "replay", "--queue-url", target, "--aggregate-type", "Flight", "--rate", "10", "--yes", "--json"
    )
    elapsed = time.monotonic() - started
    assert json.loads(result.stdout)["sent"] == 9
    assert elapsed >= 0.8  # 9 messages at 10 per second: the last batch waits until 0.9 s
    messages = receive_all(target, 9)
    assert len(messages) == 9
    seqs: dict[str, list[int]] = {}
    for m in messages:
        assert m["MessageAttributes"]["txoutbox-replay"]["StringValue"] == "1"
        body = orjson.loads(m["Body"])
        assert m["Attributes"]["MessageGroupId"] == body["aggregateId"]
        assert m["Attributes"]["MessageDeduplicationId"].startswith(uuid.UUID(body["eventId"]).hex + "-")
        seqs.setdefault(body["aggregateId"], []).append(body["data"]["seq"])
    assert seqs == {"A": [0, 1, 2, 3], "B": [0, 1, 2], "C": [0, 1]}

    # a second, deliberate replay is delivered again (its own deduplication ids), in the configured format
    again = cli(
        "replay", "--queue-url", target, "--aggregate", "C", "--yes", TXOUTBOX_MESSAGE_FORMAT="cloudevents"
    )
    assert "replayed 2 event(s)" in again.stdout
    bodies = [orjson.loads(m["Body"]) for m in receive_all(target, 2)]
    assert [(b["specversion"], b["subject"], b["data"]["seq"]) for b in bodies] == [
        ("1.0", "C", 0),
        ("1.0", "C", 1),
    ]

    nothing = cli("replay", "--queue-url", target, "--type", "NoSuchType", "--yes")
    assert "nothing to replay" in nothing.stdout
    not_fifo = cli("replay", "--queue-url", target.removesuffix(".fifo"), code=2)
    assert "FIFO" in not_fifo.stderr
    missing = cli("replay", "--queue-url", target.replace("replay", "nosuchqueue"), "--yes", code=1)
    assert missing.stderr.count("error:") == 1 and "queue" in missing.stderr.lower()


async def test_the_inbox_absorbs_a_replay_unless_asked_to_reprocess(
    settings: Settings, cli: Any, sqs: Any
) -> None:
    await _publish_archived(settings, {"A": 2})
    handled: dict[str, list[InboundEvent]] = {"plain": [], "reprocess": []}

    def handler(name: str) -> Any:
        async def handle(conn: Any, batch: Sequence[InboundEvent]) -> None:
            handled[name].extend(batch)

        return handle

    plain = Consumer(settings, "plain", handler("plain"), concurrency=1, wait_seconds=1)
    async with running(plain):
        assert await apoll(lambda: len(handled["plain"]) == 2, 15)  # the relay's messages
        assert not any(e.replayed for e in handled["plain"])
        cli("replay", "--queue-url", settings.sqs_queue_url, "--yes")
        assert await apoll(lambda: plain.duplicates == 2, 15)  # already handled: duplicates
    assert len(handled["plain"]) == 2

    # a consumer that already handled them, asked to reprocess replays: handles them again.
    # The replay goes to a queue of its own: the plain consumer left a long poll open on the first one when
    # it stopped, and SQS (fauxqs too) hands a message sent within that poll's wait to it, hidden for the
    # visibility timeout (30 s), however gone its client is.
    suffix = uuid.uuid4().hex[:10]
    target = ensure_queues(sqs, f"again{suffix}.fifo", f"againdlq{suffix}.fifo").queue_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE txoutbox.inbox SET consumer = 'reprocess' WHERE consumer = 'plain'")
    again = Consumer(
        replace(settings, sqs_queue_url=target),
        "reprocess",
        handler("reprocess"),
        concurrency=1,
        wait_seconds=1,
        reprocess_replayed=True,
    )
    cli("replay", "--queue-url", target, "--yes")
    async with running(again):
        assert await apoll(lambda: len(handled["reprocess"]) == 2, 15)
    assert all(e.replayed for e in handled["reprocess"])
    assert [e.data["seq"] for e in handled["reprocess"]] == [0, 1]
    assert again.duplicates == 0


def test_a_row_archived_while_maintenance_runs_gets_its_partition(database_url: str) -> None:
    """An acknowledgement that lands in the default partition while the first pass runs (today has no
    partition yet) must not make the pass fail: the pass waits for it and moves its row in."""
    import threading

    with psycopg.connect(database_url) as writer:  # a transaction left open: an acknowledgement in flight
        _archive(writer, TODAY, "in-flight", 1)
        result: dict[str, Any] = {}

        def run_pass() -> None:
            try:
                with psycopg.connect(database_url, autocommit=True) as conn:
                    result["report"] = retention.maintain(conn, 7)
            except Exception as exc:  # the assertion below shows it
                result["error"] = exc

        maintainer = threading.Thread(target=run_pass)
        maintainer.start()
        with psycopg.connect(database_url, autocommit=True) as watcher:
            assert poll(
                lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = "
                    "current_database()"
                ).fetchone()[0],  # type: ignore[index]
                10,
            ), "the maintenance pass never waited for the acknowledgement in flight"
        writer.commit()
        maintainer.join(15)
    assert "error" not in result, result.get("error")
    assert result["report"].default_rows == 0
    assert [r[1:] for r in archived(database_url)] == [
        ("in-flight", f"txoutbox.{retention.partition_name(TODAY)}")
    ]
