"""The outbox's health, as `GET /health` and `txoutbox status` report it.

`summarize()` is pure: it turns the rows of `OUTBOX_STATS` and `RELAYS_LIVE` into one JSON-ready dict.
`read_health()` / `read_health_sync()` run those two statements on a connection the caller owns and summarize
them. They do not commit: on a non-autocommit connection they leave the (read-only) transaction open.

The circuit, as the system sees it, from the relays that sent a heartbeat within 3 heartbeat periods:
"open" if any of them has it open, else "half-open" if any is probing, else "closed" if any relay is alive,
else "unknown" (no relay running: nobody is publishing, which the backlog and oldest age then show).

The status is "degraded" when any of these holds, each listed in `reasons`:
- the oldest waiting event is older than `degraded_after_seconds` (HEALTH_DEGRADED_AFTER_SECONDS, 60 s);
- the circuit is open or half-open (a half-open relay is probing a broker that was failing: counting it as
  healthy would make the status flap during an outage);
- dead letters exist (an operator has to retry or discard them).
Otherwise "ok". Degraded is not down: the database answers and bookings are taken; the events wait.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from txoutbox import queries
from txoutbox.config import Settings

CIRCUIT_STATES = ("open", "half-open", "closed")


def circuit_state(relays: Sequence[Mapping[str, Any]]) -> str:
    """The worst circuit state among live relays: open > half-open > closed; "unknown" with no relay."""
    states = {str(r.get("circuit_state")) for r in relays}
    for state in CIRCUIT_STATES:
        if state in states:
            return state
    return "unknown"


def summarize(
    stats: Mapping[str, Any], relays: Sequence[Mapping[str, Any]], degraded_after_seconds: float
) -> dict[str, Any]:
    """The health document from one `OUTBOX_STATS` row and the `RELAYS_LIVE` rows.

    {"status": "ok"|"degraded", "database": "ok",
     "outbox": {"backlog", "oldest_age_seconds", "retrying", "dead_letters", "circuit", "relays"},
     "reasons": [why it is degraded, empty when ok]}
    """
    backlog = int(stats.get("backlog") or 0)
    oldest = round(float(stats.get("oldest_age_seconds") or 0.0), 3) if backlog else 0.0
    dead_letters = int(stats.get("dead_letters") or 0)
    circuit = circuit_state(relays)
    reasons: list[str] = []
    if oldest > degraded_after_seconds:
        reasons.append(
            f"the oldest waiting event is {oldest:.1f} s old (threshold {degraded_after_seconds:g} s)"
        )
    if circuit in ("open", "half-open"):
        why = next(
            (
                str(r["circuit_reason"])
                for r in relays
                if r.get("circuit_state") == circuit and r.get("circuit_reason")
            ),
            None,
        )
        reasons.append(f"the relay's circuit is {circuit}" + (f": {why}" if why else ""))
    if dead_letters:
        reasons.append(f"{dead_letters} dead-lettered event(s) wait for an operator")
    return {
        "status": "degraded" if reasons else "ok",
        "database": "ok",
        "outbox": {
            "backlog": backlog,
            "oldest_age_seconds": oldest,
            "retrying": int(stats.get("retrying") or 0),
            "dead_letters": dead_letters,
            "circuit": circuit,
            "relays": len(relays),
        },
        "reasons": reasons,
    }


def _relay_params(settings: Settings) -> dict[str, float]:
    return {"live_within_seconds": 3 * settings.relay.heartbeat_seconds}


async def read_health(conn: psycopg.AsyncConnection[Any], settings: Settings) -> dict[str, Any]:
    """Read the outbox statistics and the live relays on `conn` and summarize them."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.OUTBOX_STATS)
        stats = await cur.fetchone()
        await cur.execute(queries.RELAYS_LIVE, _relay_params(settings))
        relays = await cur.fetchall()
    return summarize(stats or {}, relays, settings.relay.degraded_after_seconds)


def read_health_sync(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, Any]:
    """Like `read_health`, on a synchronous connection (for `txoutbox status`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(queries.OUTBOX_STATS)
        stats = cur.fetchone()
        cur.execute(queries.RELAYS_LIVE, _relay_params(settings))
        relays = cur.fetchall()
    return summarize(stats or {}, relays, settings.relay.degraded_after_seconds)
