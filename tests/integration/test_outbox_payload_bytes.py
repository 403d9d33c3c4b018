"""Payload sizes: the writer states them (migration 0010); the claim measures rows written by plain SQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.helpers import apoll, outbox_count, running_relay
from txoutbox import Event, add_event, add_event_async
from txoutbox.config import Settings

PAYLOAD = {"seat": "12A", "legs": [1, 2], "price": {"amount": 10, "currency": "EUR"}}


def _sizes(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    return conn.execute(
        "SELECT payload_bytes, octet_length(payload::text) FROM txoutbox.outbox ORDER BY id"
    ).fetchall()


async def test_the_writer_stores_the_size_of_the_json_it_sent(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    sent = len(orjson.dumps(PAYLOAD))
    with psycopg.connect(database_url) as c:
        add_event(c, Event("Order", "1", "Placed", PAYLOAD))
    async with await psycopg.AsyncConnection.connect(database_url) as ac:
        await add_event_async(ac, Event("Order", "2", "Placed", PAYLOAD))
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with Session(engine) as session, session.begin():
        add_event(session, Event("Order", "3", "Placed", PAYLOAD))
    engine.dispose()
    sizes = _sizes(conn)
    # The writer's compact JSON, not jsonb's text (which the server would have had to render per insert).
    assert [stated for stated, _ in sizes] == [sent] * 3
    assert all(stated < rendered for stated, rendered in sizes)


async def test_rows_written_without_a_size_are_measured_by_the_claim(
    settings: Settings, receive_all: Any
) -> None:
    small = replace(settings, relay=replace(settings.relay, max_message_bytes=2_000))
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload) "
            "VALUES (gen_random_uuid(), 'Raw', 'R1', 'Small', '{\"n\": 1}'), "
            "(gen_random_uuid(), 'Raw', 'R2', 'Big', jsonb_build_object('pad', repeat('x', 5000)))"
        )
    async with running_relay(small):
        assert await apoll(lambda: outbox_count(settings.database_url) == 0, 10)
    with psycopg.connect(settings.database_url) as conn:
        dead = conn.execute("SELECT aggregate_id, reason FROM txoutbox.dead_letters").fetchall()
    assert len(dead) == 1 and dead[0][0] == "R2"
    assert "its payload alone" in dead[0][1]  # sized by the claim, never fetched
    messages = receive_all(settings.sqs_queue_url, 1)
    assert [orjson.loads(m["Body"])["data"] for m in messages] == [{"n": 1}]
