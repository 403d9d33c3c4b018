"""The relay's claim is planned for the backlog it meets, not for the one it met when it was prepared.

Issue 8, hole 8 (the steady-load stall of `make bench`): psycopg prepares a statement on its fifth
execution and PostgreSQL may then keep one generic plan for it. A relay that starts on an empty, freshly
analyzed outbox (the benchmark truncates it before each pass) gets a generic claim plan with sequential scans
inside the per-row order checks; once a backlog builds, every claim scans the whole outbox once per
candidate row (9-13 s for 500 rows over 6,000 waiting events, against about 0.1 s with a fresh plan), so the
backlog drains in steps seconds apart, until autovacuum's ANALYZE happens to invalidate the plan.

Issue 12 (the steady pass's 30-80 s stalls): even planned afresh, the claim met statistics that say the
outbox is empty (it usually is) and got plans whose cost grew with the backlog.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import seed_flight_events
from txoutbox import queries
from txoutbox.config import Settings
from txoutbox.relay.store import RelayStore


async def test_the_claim_is_never_run_on_a_generic_plan_made_for_an_empty_outbox(settings: Settings) -> None:
    # Empty and analyzed, as the benchmark leaves it after its TRUNCATE.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE txoutbox.outbox")
    store = RelayStore(settings, "plans")
    await store.open()
    try:
        for _ in range(40):  # idle claims: the statement gets prepared (and, unfixed, a generic plan)
            assert await store.claim(500) == []
        seed_flight_events(settings.database_url, 3_000)
        assert len(await store.claim(500)) == 500
        plans = []
        async with store.pool.connection() as c1, store.pool.connection() as c2:  # every connection it has
            for conn in (c1, c2):
                cur = await conn.execute(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                )
                plans += [
                    (generic, custom)
                    for statement, generic, custom in await cur.fetchall()
                    if "SKIP LOCKED" in statement
                ]
    finally:
        await store.close()
    assert plans  # the claim was prepared: parsed once per connection, not at every claim
    assert sum(generic for generic, _ in plans) == 0
    assert sum(custom for _, custom in plans) >= 6


def _rows_handled(node: dict[str, Any]) -> float:
    """Rows every node of a plan produced or filtered out, over all its loops: the work of the statement
    (a nested loop over the whole outbox returns few rows but filters millions)."""
    per_loop = sum(
        node.get(key, 0) for key in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter")
    )
    return per_loop * node.get("Actual Loops", 1) + sum(_rows_handled(n) for n in node.get("Plans", []))


async def _claim_work(store: RelayStore, database_url: str) -> float:
    """The work of one full-rescan claim of 500 (EXPLAIN ANALYZE on the relay's own connection, rolled
    back: nothing is claimed)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT n FROM txoutbox.outbox_reinserts").fetchone()
        assert row is not None
    params = {
        "limit": 500,
        "relay_id": "plans",
        "lease_seconds": 30.0,
        "low": 0,
        "start": 0,
        "reinserts": row[0],
        "max_claim_bytes": 4_194_304,
        "max_payload_bytes": 262_144,
    }
    async with store.pool.connection() as conn, conn.transaction(force_rollback=True):
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + queries.CLAIM, params)
        explained = await cur.fetchone()
    assert explained is not None
    return _rows_handled(explained[0][0]["Plan"])


@pytest.mark.parametrize(
    "recorded",
    [
        # (auto)vacuum and analyze ran while the outbox was empty
        "DELETE FROM txoutbox.outbox; VACUUM (ANALYZE, TRUNCATE false) txoutbox.outbox",
        # analyze ran on a backlog since drained (its column statistics stay), vacuum on the empty outbox
        "ANALYZE txoutbox.outbox; DELETE FROM txoutbox.outbox; VACUUM (TRUNCATE false) txoutbox.outbox",
    ],
    ids=["analyzed-empty", "analyzed-full-then-vacuumed-empty"],
)
async def test_a_backlog_costs_the_claim_nothing_when_the_statistics_say_the_outbox_is_empty(
    settings: Settings, recorded: str
) -> None:
    # The outbox of a relay that keeps up is empty most of the time, and the statistics say so: about 0 rows
    # over the pages it once filled (`TRUNCATE false`: pages stay, as when vacuum cannot get the lock to
    # give them back). Until the next analyze the planner expects one row from any scan of it. Unfixed, the
    # claim's plan then grew with the square of the backlog: it probed each candidate's predecessor by a
    # range of the primary key, read every waiting row to sort them, or wrote the leases through a nested
    # loop over the whole outbox (in make bench's steady pass: 4 s for one claim of 500 over 14,000 waiting
    # events, then claims hitting the 60 s statement timeout, commit -> SQS up to 82 s).
    url = settings.database_url
    seed_flight_events(url, 20_000)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE txoutbox.outbox SET (autovacuum_enabled = off)")  # the stale view stays
        for statement in recorded.split("; "):
            conn.execute(statement)
        stats = conn.execute(
            "SELECT reltuples, relpages FROM pg_class WHERE oid = 'txoutbox.outbox'::regclass"
        ).fetchone()
    assert stats is not None and stats[0] == 0 and stats[1] > 500, stats  # the view of an empty outbox
    store = RelayStore(settings, "plans")
    await store.open()
    try:
        seed_flight_events(url, 1_000, start=100_001)
        small = await _claim_work(store, url)
        seed_flight_events(url, 19_000, start=200_001)
        large = await _claim_work(store, url)
    finally:
        await store.close()
    assert large < 2 * small, f"claim: {small:,.0f} rows handled over 1,000 waiting, {large:,.0f} over 20,000"
