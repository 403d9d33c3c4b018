"""The writer's per-aggregate lock rows: left behind by writers, pruned by relays, order kept throughout."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg

from tests.helpers import db_only_settings, write_event, write_in_thread
from txoutbox import Event, add_event, queries
from txoutbox.relay.store import RelayStore, prune_aggregate_locks

LOCKS = "SELECT aggregate_id FROM txoutbox.aggregate_locks ORDER BY aggregate_id"


def _locks(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute(LOCKS).fetchall()]


def _prune(database_url: str) -> int:
    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            return await prune_aggregate_locks(c)

    return asyncio.run(run())


def _order(conn: psycopg.Connection[Any], aggregate: str) -> list[str]:
    rows = conn.execute(
        "SELECT event_type FROM txoutbox.outbox WHERE aggregate_id = %s ORDER BY id", (aggregate,)
    ).fetchall()
    return [row[0] for row in rows]


async def test_relay_heartbeat_prunes_the_lock_rows_nobody_holds(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Writers leave their lock rows behind; the relay's heartbeat deletes all but the held ones."""
    for aggregate in ("a", "b", "c"):
        write_event(database_url, aggregate)
    assert _locks(conn) == ["a", "b", "c"]  # left behind by the committed writers
    holder = psycopg.connect(database_url)
    try:
        add_event(holder, Event("Order", "a", "Held", {}))  # locks the row left behind for "a"
        add_event(holder, Event("Order", "new", "Held", {}))  # a row of its own, not yet committed
        store = RelayStore(db_only_settings(database_url), "prune-test")
        await store.open()
        try:
            await store.heartbeat("closed", None, 0)
            assert _locks(conn) == ["a"]  # b and c pruned; the held row stays; "new" is not visible yet
            holder.commit()
            assert _locks(conn) == ["a", "new"]
            await store.heartbeat("closed", None, 0)
            assert _locks(conn) == []
        finally:
            await store.close()
    finally:
        holder.close()
    assert len(_order(conn, "a")) == 2


def test_a_writer_of_a_left_behind_row_waits_for_its_holder_across_a_prune(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The lock of a row left behind (ON CONFLICT ... WHERE false) serialises writers like a new row's,
    and a prune skips it while it is held."""
    write_event(database_url, "same", "Zero")  # leaves the row behind
    first = psycopg.connect(database_url)
    try:
        add_event(first, Event("Order", "same", "First", {}))  # locks the left-behind row
        assert _prune(database_url) == 0  # held: skipped, not deleted
        thread, done = write_in_thread(database_url, "same", "Second")
        assert not done.wait(0.5), "the second writer of the aggregate did not wait for the first"
        first.commit()
    finally:
        first.close()
    thread.join(10)
    assert done.is_set()
    assert _order(conn, "same") == ["Zero", "First", "Second"]


def test_writers_racing_a_prune_of_their_row_still_commit_in_id_order(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """A writer that comes for a row being pruned waits for the prune, then takes a fresh row, which the
    next writer of the aggregate waits on."""
    write_event(database_url, "same", "Zero")
    pruner = psycopg.connect(database_url)
    first = psycopg.connect(database_url)
    try:
        # The prune's delete, not yet committed: the row is locked and on its way out.
        assert pruner.execute(queries.AGGREGATE_LOCKS_PRUNE, {"limit": 10}).rowcount == 1
        first_done = threading.Event()

        def first_writer() -> None:
            add_event(first, Event("Order", "same", "First", {}))
            first_done.set()

        thread = threading.Thread(target=first_writer)
        thread.start()
        assert not first_done.wait(0.5), "the writer did not wait for the prune of its row"
        pruner.commit()
        thread.join(10)
        assert first_done.is_set()  # it inserted a fresh row, and holds it
        second, second_done = write_in_thread(database_url, "same", "Second")
        assert not second_done.wait(0.5), "the second writer did not wait for the first's fresh row"
        first.commit()
        second.join(10)
        assert second_done.is_set()
    finally:
        pruner.close()
        first.close()
    assert _order(conn, "same") == ["Zero", "First", "Second"]
