"""The wake-up without a NOTIFY per commit, and the claim's low-water mark under a pinned xmin horizon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import apoll, db_only_settings, outbox_count, running, running_relay
from txoutbox import Event, add_event, queries
from txoutbox.config import RelaySettings
from txoutbox.publishers.null import NullPublisher
from txoutbox.relay import Relay
from txoutbox.relay.store import RESCAN_COST_RATIO, Outcome, RelayStore


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
        yield conn


def _book(database_url: str, aggregate: str) -> None:
    with psycopg.connect(database_url) as conn:
        add_event(conn, Event("Flight", aggregate, "FlightBooked", {"id": aggregate}))


def _notified(listener: psycopg.Connection[Any]) -> bool:
    # A commit's notification is queued before COMMIT returns; it reaches this session within
    # milliseconds. Waiting 0.5 s for one that should NOT come is the bounded wait of the negative case.
    return any(True for _ in listener.notifies(timeout=0.5, stop_after=1))


def test_writers_notify_only_while_a_relay_is_idle(
    database_url: str, listener: psycopg.Connection[Any]
) -> None:
    _book(database_url, "1")
    assert not _notified(listener), "NOTIFY sent while no relay waits for one"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(queries.IDLE_ANNOUNCE, {"relay_id": "r1", "valid_seconds": 60})
        _book(database_url, "2")
        assert _notified(listener), "no NOTIFY although a relay announced it is idle"
        conn.execute(queries.IDLE_WITHDRAW, {"relay_id": "r1"})
        _book(database_url, "3")
        assert not _notified(listener)
        # A dead relay's announcement expires.
        conn.execute(queries.IDLE_ANNOUNCE, {"relay_id": "r2", "valid_seconds": 0})
        _book(database_url, "4")
        assert not _notified(listener)


async def test_an_idle_relay_is_woken_by_a_commit_and_withdraws_when_busy(database_url: str) -> None:
    # The fallback poll is 60 s: only the notification can bring the event out within the 5 s allowed.
    settings = db_only_settings(database_url, poll_interval=60.0)

    def idle_rows() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM txoutbox.idle_relays WHERE until > now()").fetchone()
            return int(row[0]) if row else 0

    async with running_relay(settings, NullPublisher()) as relay:
        assert await apoll(lambda: idle_rows() == 1, 10), "the quiet relay did not announce it is idle"
        for n in range(3):
            before = relay.published_total
            _book(database_url, f"wake-{n}")
            assert await apoll(lambda b=before: relay.published_total == b + 1, 5), "not woken by NOTIFY"
            assert await apoll(lambda: idle_rows() == 1, 10)
    assert outbox_count(database_url) == 0
    assert idle_rows() == 0, "a stopped relay left its announcement"


async def test_claims_skip_the_deleted_prefix_under_a_pinned_horizon(database_url: str) -> None:
    # Rows deleted while a snapshot is held cannot be vacuumed, nor their index entries marked dead: a
    # claim that scanned from the outbox's start would walk every one of them, each time (that is what
    # made a drain 0.6x as fast). From the low-water mark a claim reads a few pages, however many rows
    # lie dead in front of it.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload)
            SELECT gen_random_uuid(), 'Flight', (n % 1000)::text, 'FlightBooked', jsonb_build_object('n', n)
            FROM generate_series(1, 30000) AS n
            """
        )
        conn.execute("VACUUM ANALYZE txoutbox.outbox")
    holder = psycopg.connect(database_url)
    try:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM txoutbox.relays")  # the snapshot, held to the end
        store = RelayStore(db_only_settings(database_url), "pinned-test")
        await store.open()
        try:
            store.rescan_seconds = 3600.0  # the first claim scans from the start, then none inside the drain
            claimed = 0
            while claimed < 27_500:
                rows = await store.claim(500)
                assert rows, f"claims dried up after {claimed} events"
                claimed += len(rows)
                await store.acknowledge(Outcome(published=[r.row_id for r in rows]), lambda: False)

            async def mark_caught_up() -> bool:
                # The mark follows the drain a look or two behind (a look every LOW_WATER_SECONDS, taken
                # over only once the transactions running at the look have ended): claim on until it has.
                rows = await store.claim(1)
                await store.acknowledge(Outcome(published=[r.row_id for r in rows]), lambda: False)
                return store.scan_start > 25_000

            await apoll(mark_caught_up, 10, interval=0.03)
            mark = store.scan_start
        finally:
            await store.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            counter = conn.execute("SELECT n FROM txoutbox.outbox_reinserts").fetchone()
            rs = RelaySettings()
            claim = {
                "limit": 500,
                "lease_seconds": 30,
                "reinserts": counter[0] if counter else None,
                "max_claim_bytes": rs.max_claim_bytes,
                "max_payload_bytes": rs.max_message_bytes,
            }
            explain = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.CLAIM,
                {**claim, "relay_id": "probe", "low": mark, "start": mark},
            ).fetchone()
            from_start = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.CLAIM,
                {**claim, "relay_id": "probe2", "low": 0, "start": 0},
            ).fetchone()
    finally:
        holder.close()
    assert explain is not None and from_start is not None
    buffers = explain[0][0]["Plan"]["Shared Hit Blocks"] + explain[0][0]["Plan"]["Shared Read Blocks"]
    full = from_start[0][0]["Plan"]["Shared Hit Blocks"] + from_start[0][0]["Plan"]["Shared Read Blocks"]
    assert mark > 25_000, f"the low-water mark stayed at {mark}"
    assert buffers * 4 < full, (buffers, full)


async def test_a_retried_dead_letter_is_claimed_before_later_events_of_its_aggregate(
    database_url: str,
) -> None:
    # The claim scans from the relay's low-water mark. A dead letter retried goes back under its old id,
    # below the mark: the first retry on a fresh database must make the next claim scan from 0 too, or the
    # later event of the same aggregate is handed out alone, ahead of it (seen with a sequence as the
    # counter: a fresh sequence's first nextval leaves last_value unchanged).
    with psycopg.connect(database_url) as conn:
        add_event(conn, Event("Flight", "A", "FlightBooked", {"n": 1}))
        add_event(conn, Event("Flight", "A", "FlightUpdated", {"n": 2}))
    with psycopg.connect(database_url, autocommit=True) as conn:
        first, second = (r[0] for r in conn.execute("SELECT id FROM txoutbox.outbox ORDER BY id"))
    store = RelayStore(db_only_settings(database_url), "reinsert-test")
    await store.open()
    try:
        store.rescan_seconds = 3600.0  # no periodic full rescan in this test: only the counter may help
        rows = await store.claim(10)
        assert [r.row_id for r in rows] == [first, second]
        await store.acknowledge(
            Outcome(dead_ids=[first], dead_reasons=["refused"], released=[second]), lambda: False
        )
        # Looks until the mark has moved past the dead letter's id (the second event is all that is left).
        assert await apoll(lambda: _mark_after(store, second), 5, interval=0.03)
        with psycopg.connect(database_url) as conn:
            dead_id = conn.execute("SELECT id FROM txoutbox.dead_letters").fetchone()[0]  # type: ignore[index]
            conn.execute(queries.DEAD_LETTER_RETRY, {"all": False, "id": dead_id})
        rows = await store.claim(10)
        assert [r.row_id for r in rows] == [first, second], "the later event went without the retried one"
    finally:
        await store.close()


async def _mark_after(store: RelayStore, second: int) -> bool:
    await store.claim(0)  # a claim of nothing: only the look at the low-water mark
    return store.scan_start == second


def _seed_distinct(database_url: str, events: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload)
            SELECT gen_random_uuid(), 'Flight', n::text, 'FlightBooked', jsonb_build_object('n', n)
            FROM generate_series(1, %s) AS n
            """,
            (events,),
        )


async def test_a_claim_after_a_short_one_starts_from_the_low_water_mark_again(database_url: str) -> None:
    # A claim that follows a full one starts at the frontier (past the rows in hand). Events given back
    # below it must not wait for the backlog beyond it: once a claim comes back short, the next scans
    # from the low-water mark and finds them.
    _seed_distinct(database_url, 30)
    store = RelayStore(db_only_settings(database_url), "frontier-test")
    await store.open()
    try:
        store.rescan_seconds = store.from_low_seconds = 3600.0  # only the short-claim rule may help
        first = await store.claim(10)
        await store.acknowledge(Outcome(released=[r.row_id for r in first[:5]]), lambda: False)
        second = await store.claim(10)
        assert [r.row_id for r in second] == [r.row_id + 10 for r in first], "not from the frontier"
        assert len(await store.claim(10)) == 10
        assert await store.claim(10) == []  # the frontier is past the end: short
        again = await store.claim(10)
        assert [r.row_id for r in again] == [r.row_id for r in first[:5]]
    finally:
        await store.close()


async def test_events_given_back_below_the_frontier_are_claimed_while_a_backlog_lasts(
    database_url: str,
) -> None:
    # Full claims keep starting at the frontier; at least one every `from_low_seconds` scans from the
    # low-water mark, so an event given back (a failed round, another relay's expired lease) is not left
    # until the whole backlog has gone.
    _seed_distinct(database_url, 3_000)
    store = RelayStore(db_only_settings(database_url), "frontier-test")
    await store.open()
    try:
        store.rescan_seconds = 3600.0
        store.from_low_seconds = 0.02
        first = await store.claim(10)
        given_back = {r.row_id for r in first[:5]}
        await store.acknowledge(Outcome(released=sorted(given_back)), lambda: False)
        claimed: set[int] = set()
        for _ in range(290):  # fewer claims than the backlog holds: each one comes back full
            rows = await store.claim(10)
            assert len(rows) == 10
            claimed |= {r.row_id for r in rows}
            if given_back <= claimed:
                break
        assert given_back <= claimed, "events given back waited for the end of the backlog"
    finally:
        await store.close()


def _idle_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM txoutbox.idle_relays WHERE until > now()").fetchone()
        return int(row[0]) if row else 0


async def test_an_announcement_overtaken_by_a_withdrawal_does_not_leave_writers_silent(
    database_url: str,
) -> None:
    # Two loops: one announces idle; the other finds events while the announcement is on its way and
    # withdraws it first. The relay then believed it was idle with no row left: writers sent no NOTIFY,
    # and the next event waited for the fallback poll (60 s here; 1 s by default).
    settings = db_only_settings(database_url, poll_interval=60.0, workers=2)
    relay = Relay(settings, NullPublisher())
    announce = relay.store.announce_idle
    gate, held = asyncio.Event(), asyncio.Event()

    async def slow_announce(valid_seconds: float) -> bool:
        done = await announce(valid_seconds)
        if not gate.is_set():  # the first announcement: its answer is delayed (a slow round trip)
            held.set()
            await gate.wait()
        return done

    relay.store.announce_idle = slow_announce  # type: ignore[method-assign]
    async with running(relay):
        await asyncio.wait_for(held.wait(), 10)
        _book(database_url, "first")
        assert await apoll(lambda: relay.published_total == 1, 5)
        gate.set()
        assert await apoll(lambda: _idle_rows(database_url) == 1, 5), "quiet relay, no idle row"
        _book(database_url, "second")
        assert await apoll(lambda: relay.published_total == 2, 5), "the next event waited for the poll"


async def test_a_slow_full_rescan_postpones_the_next_one_by_its_cost(database_url: str) -> None:
    # The periodic scan from the outbox's first id walks every row deleted under a pinned horizon: in make
    # bench's pinned drain those rescans cost the relay a quarter of its speed. The next one waits
    # RESCAN_COST_RATIO times as long as the last took (here the floor, rescan_seconds, is 0: unfixed,
    # every claim was a full rescan).
    _seed_distinct(database_url, 30_000)
    holder = psycopg.connect(database_url)
    try:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM txoutbox.relays")  # the snapshot, held to the end
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM txoutbox.outbox WHERE id <= (SELECT max(id) - 10 FROM txoutbox.outbox)")
        store = RelayStore(db_only_settings(database_url), "rescan-test")
        await store.open()
        try:
            store.rescan_seconds = 0.0
            assert len(await store.claim(1)) == 1  # a full rescan: past 29,990 dead rows
            took, planned = store.last_rescan_seconds, store._rescan_at - time.monotonic()
            assert took > 0
            # what is left of RESCAN_COST_RATIO x its duration (the claim decoded its row since)
            assert planned > RESCAN_COST_RATIO * took - 0.05, (took, planned)
            before = store.last_rescan_seconds
            assert len(await store.claim(1)) == 1
            assert store.last_rescan_seconds == before, "the next claim scanned from the start again"
        finally:
            await store.close()
    finally:
        holder.close()


async def test_claims_in_flight_together_start_at_frontiers_of_their_own(database_url: str) -> None:
    # Two workers' claims run at once. Started at the same frontier, the second would walk (and try to
    # lock) every row the first is leasing; each claim from the frontier moves it on by its limit first.
    _seed_distinct(database_url, 100)
    store = RelayStore(db_only_settings(database_url), "frontier-test")
    await store.open()
    try:
        store.rescan_seconds = store.from_low_seconds = 3600.0
        first = await store.claim(10)  # full: a backlog lies beyond it
        frontier = first[-1].row_id + 1
        starts = [store._scan_from(10)[1] for _ in range(2)]  # two claims sent before either returns
        assert starts == [frontier, frontier + 10]
        assert len(await store.claim(10)) == 10  # and a claim still finds its rows
    finally:
        await store.close()
