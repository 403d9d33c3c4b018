"""The relay's claim is planned for the backlog it meets, not for the one it met when it was prepared.

Issue 8, hole 8 (the steady-load stall of `make bench`): psycopg prepares a statement on its fifth
execution and PostgreSQL may then keep one generic plan for it. A relay that starts on an empty, freshly
analyzed outbox (the benchmark truncates it before each pass) gets a generic claim plan with sequential scans
inside the per-row order checks; once a backlog builds, every claim scans the whole outbox once per
candidate row (9-13 s for 500 rows over 6,000 waiting events, against about 0.1 s with a fresh plan), so the
backlog drains in steps seconds apart, until autovacuum's ANALYZE happens to invalidate the plan.
"""

from __future__ import annotations

import psycopg

from tests.helpers import seed_flight_events
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
