"""RelayStore: every SQL statement the relay runs (claim, acknowledge, release, backlog, heartbeat, alerts).

The engine never holds SQL text or a connection: it asks the store. Each method is one short autocommit
statement or one transaction; none is open while the broker is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from txoutbox import queries
from txoutbox.config import Settings
from txoutbox.connections import BOUNDED_RETRY_ERRORS, DB_ERRORS, open_pool
from txoutbox.health import read_health
from txoutbox.publishers import OutgoingMessage
from txoutbox.retention import RetentionReport, maintain_async
from txoutbox.wire import encode

log = logging.getLogger("txoutbox.relay")
# Tries of an acknowledgement that fails with a statement timeout, a lock timeout or a deadlock.
ACK_TRIES = 5

# The claim's low-water mark (see queries.CLAIM). Claims scan the outbox from `low`, not from its first
# row: rows deleted while some session holds an old snapshot (a pinned xmin horizon: a report, a forgotten
# psql) cannot be vacuumed, and a claim from the start would walk all their index entries, every time.
# `low` is the lowest id in the outbox as queries.LOW_WATER saw it (every LOW_WATER_SECONDS), taken over
# only once every transaction running then has ended, so a slower writer's lower id is never passed by.
# Every RESCAN_SECONDS one claim scans from the start anyway (events inserted by hand with explicit ids).
# That rescan walks the index entries of every row deleted since a pinned horizon began (200,000 in make
# bench's pinned drain: the rescans were two thirds of the claims' extra buffers, and the drain ran at 0.72x
# of the unpinned one; without them 0.97x). So the next rescan waits RESCAN_COST_RATIO times as long as the
# last one took, if that is longer: rescans take at most about 2 % of the claims' time.
LOW_WATER_SECONDS = 0.025
RESCAN_SECONDS = 2.0
RESCAN_COST_RATIO = 50.0
# Draining a backlog, a claim from `low` first walks every row this relay holds leased (every claim in
# hand): with 3 claims of 500 in hand, each claim walked 1,500 rows to lease 500. So a claim
# that follows a full one starts where it ended (its `frontier`, queries.CLAIM's `start`); at least one
# claim every FROM_LOW_SECONDS, and every claim after one that came back short (no backlog ahead), starts
# at `low` again and finds what the others passed over (events released, retries come due).
FROM_LOW_SECONDS = 0.1
# FRONTIER_RESERVED: claims in flight at once (the workers') each start at a frontier of their own. A claim
# that starts at the frontier moves it `limit` ids on before it runs: one that started at the same place
# would walk, and try to lock, the rows the first is leasing (or has just leased, in a snapshot that still
# shows them free: each one re-checked), about doubling the database's work per claimed row. Ids are dense
# in a backlog; rows a claim passes over are found by the next claim from `low`, as above.

# Lock rows writers left behind (queries.AGGREGATE_LOCKS_PRUNE), pruned with each heartbeat: up to
# PRUNE_BATCHES batches of PRUNE_BATCH rows, each its own short transaction, so no batch holds many row
# locks for long (a writer coming back to one of them waits for its batch). 5 s heartbeats clear 40,000
# new aggregates a second.
PRUNE_BATCH = 2_000
PRUNE_BATCHES = 100


async def prune_aggregate_locks(conn: psycopg.AsyncConnection[Any]) -> int:
    """Delete the aggregate lock rows no writer holds now (autocommit `conn`); return how many."""
    pruned = 0
    for _ in range(PRUNE_BATCHES):
        cur = await conn.execute(queries.AGGREGATE_LOCKS_PRUNE, {"limit": PRUNE_BATCH})
        pruned += cur.rowcount
        if cur.rowcount < PRUNE_BATCH:
            break
    return pruned


@dataclass(slots=True)
class ClaimedRow:
    """One leased outbox row, with its message ready to send."""

    row_id: int
    attempts: int
    created_at: dt.datetime
    message: OutgoingMessage
    claimed_at: float = 0.0  # monotonic, taken before the claim statement: its lease runs from then
    oversized: int | None = None  # the payload's size when it was too large to fetch (body left empty)


@dataclass(slots=True)
class Outcome:
    """What one claim came to; written back in one transaction."""

    published: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    failed_errors: list[str] = field(default_factory=list)
    failed_delays: list[float] = field(default_factory=list)
    dead_ids: list[int] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    released: list[int] = field(default_factory=list)


# The claim's plan must fit the backlog it meets, whatever the statistics say. An outbox that keeps up is
# empty most of the time, and (auto)vacuum and analyze record it so: about 0 rows over the pages it once
# filled, so until the next analyze the planner expects one row from any scan of it, however many wait.
# - plan_cache_mode: psycopg prepares a statement on its fifth run, and PostgreSQL may then keep one generic
#   plan made from the statistics of that moment (issue 8, hole 8: a claim as slow as backlog x claim size).
# - enable_sort: expecting one row, the planner read the claim's candidates with a scan of all rows from
#   the scan's start (a bitmap or a skip scan of outbox_aggregate_idx), then a sort, instead of the primary
#   key in order up to the LIMIT: every claim read the whole backlog (issue 12, make bench's steady pass:
#   4 s per claim of 500 over 14,000 waiting events). Sorts the claim cannot do without (its window
#   functions) still run; none of the relay's statements needs a sort over the outbox.
# The claim itself is written so that no other plan of its order checks is possible (see queries.CLAIM).
CLAIM_PLANNER_SETTINGS = {"plan_cache_mode": "force_custom_plan", "enable_sort": "off"}
# Every session of the relay's pool: the planner settings above, and timestamps in UTC. psycopg turns a
# timestamptz into a datetime in the session's time zone: for a zone named anything but "UTC" (the
# embedded server's "Etc/UTC", a server in local time) through a ZoneInfo, which cost the claim's fetch
# about 0.45 us per event (a quarter of it); for "UTC" it is datetime.timezone.utc, which the envelope's
# encoder also takes as it is (txoutbox.wire.encode_envelope).
SESSION_SETTINGS = {**CLAIM_PLANNER_SETTINGS, "TimeZone": "UTC"}


class RelayStore:
    """The relay's database side, on a pool of its own."""

    def __init__(self, settings: Settings, relay_id: str) -> None:
        self.settings = settings
        self.relay_id = relay_id
        self._pool: AsyncConnectionPool[Any] | None = None
        self._down_since: float | None = None
        self._low = 0  # claims scan from this id (see LOW_WATER_SECONDS)
        self._pending_low: tuple[int, int] | None = None  # (id, xmax): becomes `low` once xmin >= xmax
        self._reinserts: int | None = None  # the counter `low` is valid for (queries.CLAIM)
        self._low_water_at = 0.0
        self._rescan_at = 0.0
        self.rescan_seconds = RESCAN_SECONDS
        self.last_rescan_seconds = 0.0  # how long the last scan from the outbox's first id took
        self._frontier = 0  # one past the highest id claimed; claims may start there (FROM_LOW_SECONDS)
        self._ahead = False  # the last claim came back full: a backlog lies beyond the frontier
        self._from_low_at = 0.0
        self.from_low_seconds = FROM_LOW_SECONDS

    async def open(self) -> None:
        self._pool = await open_pool(
            self.settings.database_url,
            max_size=self.settings.relay.workers + 3,
            name="txoutbox-relay",
            settings=SESSION_SETTINGS,
            # The claims in flight (one per worker and one more) find their connections ready: a
            # connection opened on demand costs the first claims of a backlog a handshake each (opened in
            # the background: a database down at start-up is retried as before).
            min_size=self.settings.relay.workers + 1,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        assert self._pool is not None, "the relay is not running"
        return self._pool

    # -- reachability: one ERROR when the database goes, one INFO when it is back ------------------------

    def failed(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "database unavailable (%s: %s); retrying until it is back",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )

    def ok(self) -> None:
        if self._down_since is not None:
            log.info("database reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None

    # -- the claim and its outcome -----------------------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedRow]:
        """Lease up to `limit` claimable events (one statement), in id order, encoded for the wire."""
        started = time.monotonic()
        low, start, look = self._scan_from(limit)
        params = {
            "limit": limit,
            "relay_id": self.relay_id,
            "lease_seconds": self.settings.relay.lease_seconds,
            "low": low,
            "start": start,
            "reinserts": self._reinserts,
            "max_claim_bytes": self.settings.relay.max_claim_bytes,
            "max_payload_bytes": self.settings.relay.max_message_bytes,
        }
        async with self.pool.connection() as conn:
            if look and self._reinserts is None:
                # The first look: this claim needs the counter it reads (queries.CLAIM scans from 0 without).
                cur = await conn.execute(queries.LOW_WATER, {"low": low})
                seen = await cur.fetchone()
                if seen is not None:
                    self._advance(*seen)
                params["reinserts"] = self._reinserts
                look = False
            if look:
                # The look at the low-water mark goes in the claim's round trip (a pipeline: both in one
                # implicit transaction, committed at its end, each statement with its own snapshot, in
                # this order; the rows are used only after the commit). What it finds serves the next
                # claims: this one keeps the mark it has (an older, lower one only looks further back).
                async with conn.pipeline():
                    mark = await conn.execute(queries.LOW_WATER, {"low": low})
                    cur = await conn.execute(queries.CLAIM, params)
                    seen = await mark.fetchone()
                    records = await cur.fetchall()
                if seen is not None:
                    self._advance(*seen)
            else:
                asked = time.monotonic()
                cur = await conn.execute(queries.CLAIM, params)
                records = await cur.fetchall()
                if start == 0:  # a scan from the outbox's first id
                    self._rescanned(time.monotonic() - asked)
        self._ahead = limit > 0 and len(records) >= limit
        if records:
            self._frontier = max(self._frontier, max(r[0] for r in records) + 1)
        rs = self.settings.relay
        rows = []
        for (
            row_id,
            event_id,
            aggregate_type,
            aggregate_id,
            event_type,
            payload,
            created_at,
            attempts,
            traceparent,
            tracestate,
            payload_bytes,
        ) in sorted(records):  # by row id, the first column (ids are unique)
            if payload is None:  # too large to ever be sent: not even fetched
                message = OutgoingMessage(
                    row_id, event_id, aggregate_type, aggregate_id, event_type, b"", traceparent, tracestate
                )
                rows.append(ClaimedRow(row_id, attempts, created_at, message, started, payload_bytes))
                continue
            body = encode(
                rs.message_format,
                row_id=row_id,
                event_id=event_id,
                event_type=event_type,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                occurred_at=created_at,
                payload_json=payload,
                source=rs.event_source,
                traceparent=traceparent,
                tracestate=tracestate,
            )
            message = OutgoingMessage(
                row_id, event_id, aggregate_type, aggregate_id, event_type, body, traceparent, tracestate
            )
            rows.append(ClaimedRow(row_id, attempts, created_at, message, started))
        return rows

    async def renew(self, ids: list[int]) -> set[int]:
        """Extend the leases of `ids`; return those still ours."""
        async with self.pool.connection(timeout=self.settings.relay.lease_seconds / 3) as conn:
            cur = await conn.execute(
                queries.RENEW_LEASES,
                {
                    "ids": queries.id_array(ids),
                    "relay_id": self.relay_id,
                    "lease_seconds": self.settings.relay.lease_seconds,
                },
            )
            return {row[0] for row in await cur.fetchall()}

    def _scan_from(self, limit: int) -> tuple[int, int, bool]:
        """Where this claim's order checks look from (0 for the periodic full rescan, else the low-water
        mark), where its scan starts: there too, or at the frontier (FROM_LOW_SECONDS), which it then
        moves `limit` ids on (FRONTIER_RESERVED); and whether to look at the mark again (LOW_WATER_SECONDS).
        """
        now = time.monotonic()
        if now >= self._rescan_at:
            self._rescan_at = now + self.rescan_seconds
            self._from_low_at = now + self.from_low_seconds
            return 0, 0, False
        look = now >= self._low_water_at
        if look:
            self._low_water_at = now + LOW_WATER_SECONDS
        if not self._ahead or now >= self._from_low_at:
            self._from_low_at = now + self.from_low_seconds
            return self._low, self._low, look
        start = max(self._low, self._frontier)
        self._frontier = start + limit  # FRONTIER_RESERVED
        return self._low, start, look

    def _rescanned(self, took: float) -> None:
        """A claim scanned from the start in `took` seconds: the next full rescan waits RESCAN_COST_RATIO
        times that long if that is later than planned."""
        self.last_rescan_seconds = took
        self._rescan_at = max(self._rescan_at, time.monotonic() + RESCAN_COST_RATIO * took)

    def _advance(self, xmin: int, xmax: int, live_min: int | None, reinserts: int) -> None:
        if reinserts != self._reinserts:  # events came back under old ids: start again from 0
            self._low, self._pending_low, self._reinserts = 0, None, reinserts
        pending = self._pending_low
        if pending is not None and xmin >= pending[1]:
            # Everything that was running when `pending` was seen has ended: a lower id committed since
            # then is in `live_min` now.
            self._low = max(self._low, pending[0] if live_min is None else min(pending[0], live_min))
            self._pending_low = None
        if self._pending_low is None and live_min is not None and live_min > self._low:
            self._pending_low = (live_min, xmax)

    @property
    def scan_start(self) -> int:
        """The id claims scan from between full rescans (the low-water mark)."""
        return self._low

    def _statements(self, outcome: Outcome) -> list[tuple[str, dict[str, Any]]]:
        statements: list[tuple[str, dict[str, Any]]] = []
        if outcome.published:
            # With retention on, published events move to the archive in the same statement.
            archive = self.settings.relay.retention_days > 0
            statements.append(
                (
                    queries.ARCHIVE_PUBLISHED if archive else queries.DELETE_PUBLISHED,
                    {"ids": queries.id_array(outcome.published)},
                )
            )
        if outcome.failed_ids:
            statements.append(
                (
                    queries.RECORD_FAILURES,
                    {
                        "ids": queries.id_array(outcome.failed_ids),
                        "errors": outcome.failed_errors,
                        "delays": outcome.failed_delays,
                        "relay_id": self.relay_id,
                    },
                )
            )
        if outcome.dead_ids:
            statements.append(
                (
                    queries.DEAD_LETTER,
                    {
                        "ids": queries.id_array(outcome.dead_ids),
                        "reasons": outcome.dead_reasons,
                        "relay_id": self.relay_id,
                    },
                )
            )
        if outcome.released:
            statements.append(
                (queries.RELEASE, {"ids": queries.id_array(outcome.released), "relay_id": self.relay_id})
            )
        return statements

    async def acknowledge(self, outcome: Outcome, stopping: Callable[[], bool]) -> None:
        """Write a claim's outcome in one transaction; keep trying through a database outage.

        If it never lands (the process dies), the leases expire and the events are published again:
        at least once. The broker's deduplication and the consumer's inbox absorb the repeat. The same
        happens, with one ERROR, when a statement fails in a way retrying may not heal (a timeout, a lock,
        a deadlock: after ACK_TRIES tries) or cannot heal (bad data, a bug: at once).
        """
        statements = self._statements(outcome)
        if not statements:
            return
        delay = 0.05
        deadline = time.monotonic() + self.settings.relay.lease_seconds
        tries = 0
        while True:
            tries += 1
            try:
                async with self.pool.connection() as conn:
                    if len(statements) == 1:
                        # The usual outcome (all published): one statement is a transaction of its own,
                        # one round trip instead of BEGIN / DELETE / COMMIT.
                        await conn.execute(*statements[0])
                    else:
                        async with conn.pipeline(), conn.transaction():
                            for sql, params in statements:
                                await conn.execute(sql, params)
                self.ok()
                return
            except BOUNDED_RETRY_ERRORS as exc:
                if tries >= ACK_TRIES:
                    self._not_acknowledged(outcome, exc, f"after {tries} tries")
                    return
            except DB_ERRORS as exc:
                self.failed(exc)
                if stopping() and time.monotonic() > deadline:
                    log.warning(
                        "gave up acknowledging %d events at shutdown; their leases will expire",
                        len(outcome.published) + len(outcome.released),
                    )
                    return
            except psycopg.Error as exc:
                self._not_acknowledged(outcome, exc, "and retrying cannot help")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _not_acknowledged(self, outcome: Outcome, exc: psycopg.Error, why: str) -> None:
        log.error(
            "could not write the outcome of %d claimed events (%s, SQLSTATE %s) %s; their leases will "
            "expire and they will be published again (deduplicated downstream)",
            len(self._ids(outcome)),
            type(exc).__name__,
            exc.sqlstate,
            why,
        )

    @staticmethod
    def _ids(outcome: Outcome) -> list[int]:
        return [*outcome.published, *outcome.failed_ids, *outcome.dead_ids, *outcome.released]

    async def release_all(self) -> None:
        """At shutdown: give back every lease of this relay and leave the registry."""
        try:
            async with self.pool.connection(timeout=3) as conn:
                await conn.execute(queries.RELEASE_ALL, {"relay_id": self.relay_id})
                await conn.execute(queries.IDLE_WITHDRAW, {"relay_id": self.relay_id})
                await conn.execute(queries.RELAY_DEREGISTER, {"relay_id": self.relay_id})
        except DB_ERRORS as exc:
            log.warning("could not release leases at shutdown (%s); they expire on their own", exc)

    async def announce_idle(self, valid_seconds: float) -> bool:
        """Writers notify at commit from now on (see queries.INSERT_EVENTS_AND_NOTIFY); False if the
        database did not answer (the relay keeps polling)."""
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute(
                    queries.IDLE_ANNOUNCE, {"relay_id": self.relay_id, "valid_seconds": valid_seconds}
                )
        except DB_ERRORS:
            return False
        return True

    async def withdraw_idle(self) -> None:
        """This relay polls again on its own: writers need not notify (if this fails, `until` expires)."""
        with contextlib.suppress(*DB_ERRORS):
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute(queries.IDLE_WITHDRAW, {"relay_id": self.relay_id})

    async def backlog(self) -> int | None:
        """Events in the outbox, or None when the database does not answer quickly."""
        try:
            async with self.pool.connection(timeout=2) as conn:
                cur = await conn.execute(queries.OUTBOX_COUNT)
                row = await cur.fetchone()
                return int(row[0]) if row else 0
        except DB_ERRORS:
            return None

    # -- side jobs -----------------------------------------------------------------------------------------

    async def maintain_retention(self) -> RetentionReport:
        """Create the archive's coming daily partitions and drop expired ones (txoutbox.retention)."""
        async with self.pool.connection(timeout=5) as conn:
            return await maintain_async(conn, self.settings.relay.retention_days)

    async def heartbeat(
        self, circuit_state: str, circuit_reason: str | None, published_total: int
    ) -> dict[str, Any]:
        """Register this relay's circuit, prune long-silent relays, and return the system's health."""
        async with self.pool.connection(timeout=5) as conn:
            await conn.execute(
                queries.RELAY_HEARTBEAT,
                {
                    "relay_id": self.relay_id,
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "circuit_state": circuit_state,
                    "circuit_reason": circuit_reason,
                    "published_total": published_total,
                },
            )
            health = await read_health(conn, self.settings)
            await conn.execute(queries.RELAY_PRUNE)
            await prune_aggregate_locks(conn)
        return health

    async def flip_alert(self, state: str, detail: dict[str, Any]) -> bool:
        """Set the shared alert state; True when this call changed it (its caller sends the alert)."""
        async with self.pool.connection(timeout=5) as conn:
            cur = await conn.execute(
                queries.ALERT_FLIP, {"name": "outbox", "state": state, "detail": json.dumps(detail)}
            )
            return await cur.fetchone() is not None

    async def take_alert(self, lease_seconds: float) -> tuple[str, dict[str, Any], dt.datetime] | None:
        """The alert state change not yet announced (state, detail, changed_at), leased to this relay for
        one POST; None when there is none or another relay is sending it."""
        async with self.pool.connection(timeout=5) as conn:
            cur = await conn.execute(queries.ALERT_TAKE, {"name": "outbox", "lease_seconds": lease_seconds})
            row = await cur.fetchone()
        if row is None:
            return None
        state, detail, changed_at = row
        return str(state), json.loads(detail) if detail else {}, changed_at

    async def alert_sent(self, state: str, changed_at: dt.datetime) -> None:
        async with self.pool.connection(timeout=5) as conn:
            await conn.execute(
                queries.ALERT_SENT, {"name": "outbox", "state": state, "changed_at": changed_at}
            )

    async def alert_not_sent(self) -> None:
        async with self.pool.connection(timeout=5) as conn:
            await conn.execute(queries.ALERT_UNTAKE, {"name": "outbox"})
