"""The relay: moves committed outbox events to the broker, at least once, in order per aggregate.

One process runs `workers` loops. Each loop claims a batch in one statement (a lease, not an open
transaction), publishes it with several `SendMessageBatch` calls in flight, and acknowledges the outcome
in one transaction: published rows deleted, refused ones rescheduled or dead-lettered, the rest released.
No transaction is open while the broker is called. A crashed relay's leases simply expire.

Order: within a claim, the events of one aggregate go out one round at a time (one entry per group per
round), and a lane stops at its first failure, releasing what follows. Across claims and processes, the
claim never hands out an event while an earlier event of its aggregate is leased, backing off or dead.
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
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from txoutbox import queries
from txoutbox.circuit import Circuit, CircuitState
from txoutbox.config import Settings
from txoutbox.connections import KEEPALIVES, open_pool
from txoutbox.errors import BrokerUnavailableError
from txoutbox.health import read_health
from txoutbox.metrics import CIRCUIT_VALUES, RelayMetrics
from txoutbox.publisher import EntryFailure, OutgoingMessage, Publisher, encode_envelope
from txoutbox.retry import DeadLetter, RetryPolicy

log = logging.getLogger("txoutbox.relay")

DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# After a wake-up, wait this long so the commits of a burst are claimed together (one claim, not ten).
WAKE_COALESCE_SECONDS = 0.002


@dataclass(slots=True)
class _Row:
    row_id: int
    attempts: int
    created_at: dt.datetime
    message: OutgoingMessage


@dataclass(slots=True)
class _Outcome:
    """What one claim came to; written back in one transaction."""

    published: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    failed_errors: list[str] = field(default_factory=list)
    failed_delays: list[float] = field(default_factory=list)
    dead_ids: list[int] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    broker_error: BrokerUnavailableError | None = None


def _pack(rows: Sequence[_Row], max_entries: int, max_bytes: int) -> list[list[_Row]]:
    """Cut a round into batches within the broker's entry and byte limits."""
    batches: list[list[_Row]] = []
    current: list[_Row] = []
    size = 0
    for row in rows:
        if current and (len(current) == max_entries or size + row.message.size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(row)
        size += row.message.size
    if current:
        batches.append(current)
    return batches


class Relay:
    """One relay process's engine. `await relay.run(stop)` until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        *,
        relay_id: str | None = None,
        metrics: RelayMetrics | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        rs = settings.relay
        self.settings = settings
        self.publisher = publisher
        self.relay_id = relay_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = metrics or RelayMetrics()
        self.retry_policy = retry_policy or RetryPolicy(
            rs.max_attempts, rs.retry_base_seconds, rs.retry_cap_seconds
        )
        self.circuit = Circuit(rs.probe_base_seconds, rs.probe_cap_seconds)
        self._reported_state = self.circuit.state
        self._wake = asyncio.Event()
        self._report_now = asyncio.Event()  # the circuit changed: heartbeat at once, not at the next tick
        self._stopping = False
        self._in_flight = asyncio.Semaphore(rs.max_in_flight)
        self._db_down_since: float | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self.published_total = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; then finish or release the work in hand and return."""
        rs = self.settings.relay
        self._pool = await open_pool(
            self.settings.database_url, max_size=rs.workers + 3, name="txoutbox-relay"
        )
        await self._open_publisher()
        log.info(
            "relay %s started: %d workers, claims of %d, %d batches in flight, lease %.0f s",
            self.relay_id,
            rs.workers,
            rs.batch_size,
            rs.max_in_flight,
            rs.lease_seconds,
        )
        workers = [
            asyncio.create_task(self._supervise(f"worker-{n}", self._worker), name=f"worker-{n}")
            for n in range(rs.workers)
        ]
        helpers = [
            asyncio.create_task(self._supervise("listener", self._listen), name="listener"),
            asyncio.create_task(self._supervise("heartbeat", self._heartbeat), name="heartbeat"),
        ]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            self._wake.set()
            log.info(
                "relay %s stopping: finishing the batches in hand (up to %.0f s)",
                self.relay_id,
                rs.shutdown_timeout,
            )
            _, unfinished = await asyncio.wait(workers, timeout=rs.shutdown_timeout)
            for task in [*unfinished, *helpers]:
                task.cancel()
            await asyncio.gather(*workers, *helpers, return_exceptions=True)
            await self._release_all()
            await self.publisher.close()
            await self._pool.close()
            log.info("relay %s stopped; %d events published", self.relay_id, self.published_total)

    async def _open_publisher(self) -> None:
        """Let the publisher set up its client before the first claim (optional `open()` method), so the
        first events after a start do not wait for it; if that fails, the first send tries again."""
        opener = getattr(self.publisher, "open", None)
        if opener is None:
            return
        try:
            await opener()
        except Exception as exc:
            log.warning(
                "publisher set-up failed (%s: %s); retrying on the first send", type(exc).__name__, exc
            )

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Keep a background loop alive: an unexpected error is logged and the loop restarted."""
        while not self._stopping:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay task %s failed; restarting it in 1 s", name)
                await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the relay is told to stop."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- database access -------------------------------------------------------------------------------

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        assert self._pool is not None, "the relay is not running"
        return self._pool

    def _db_failed(self, exc: BaseException) -> None:
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            log.error(
                "database unavailable (%s: %s); retrying until it is back",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )

    def _db_ok(self) -> None:
        if self._db_down_since is not None:
            log.info("database reachable again after %.1f s", time.monotonic() - self._db_down_since)
            self._db_down_since = None

    async def _claim(self, limit: int) -> list[_Row]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                queries.CLAIM,
                {
                    "limit": limit,
                    "relay_id": self.relay_id,
                    "lease_seconds": self.settings.relay.lease_seconds,
                },
            )
            records = await cur.fetchall()
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
        ) in sorted(records):  # by row id, the first column (ids are unique)
            body = encode_envelope(event_id, event_type, aggregate_type, aggregate_id, created_at, payload)
            rows.append(
                _Row(
                    row_id,
                    attempts,
                    created_at,
                    OutgoingMessage(row_id, event_id, aggregate_type, aggregate_id, event_type, body),
                )
            )
        return rows

    async def _acknowledge(self, outcome: _Outcome) -> None:
        """Write a claim's outcome in one transaction; keep trying through a database outage.

        If it never lands (the process dies), the leases expire and the events are published again:
        at least once. The broker's deduplication and the consumer's inbox absorb the repeat.
        """
        statements: list[tuple[str, dict[str, Any]]] = []
        if outcome.published:
            statements.append((queries.DELETE_PUBLISHED, {"ids": outcome.published}))
        if outcome.failed_ids:
            statements.append(
                (
                    queries.RECORD_FAILURES,
                    {
                        "ids": outcome.failed_ids,
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
                    {"ids": outcome.dead_ids, "reasons": outcome.dead_reasons, "relay_id": self.relay_id},
                )
            )
        if outcome.released:
            statements.append((queries.RELEASE, {"ids": outcome.released, "relay_id": self.relay_id}))
        if not statements:
            return
        delay = 0.05
        deadline = time.monotonic() + self.settings.relay.lease_seconds
        while True:
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
                self._db_ok()
                return
            except DB_ERRORS as exc:
                self._db_failed(exc)
                if self._stopping and time.monotonic() > deadline:
                    log.warning(
                        "gave up acknowledging %d events at shutdown; their leases will expire",
                        len(outcome.published) + len(outcome.released),
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _release_all(self) -> None:
        try:
            async with self.pool.connection(timeout=3) as conn:
                await conn.execute(queries.RELEASE_ALL, {"relay_id": self.relay_id})
                await conn.execute(queries.RELAY_DEREGISTER, {"relay_id": self.relay_id})
        except DB_ERRORS as exc:
            log.warning("could not release leases at shutdown (%s); they expire on their own", exc)

    # -- the work loop ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        rs = self.settings.relay
        # Draining a backlog, the next claim is made while this one is published: the database claims while
        # this process sends, instead of one waiting for the other. Only after a claim that came back at
        # least half full (a backlog), never while probing; the claim's own checks keep the order (the rows
        # in hand are leased, so later events of their aggregates are not handed out).
        prefetch: asyncio.Task[list[_Row]] | None = None
        try:
            while not self._stopping:
                probing = False
                if not self.circuit.closed:
                    if prefetch is not None:
                        await self._release_prefetched(prefetch)  # the circuit opened: give them back
                        prefetch = None
                    if not self.circuit.try_probe():
                        await self._sleep(max(0.01, min(self.circuit.seconds_to_probe(), rs.poll_interval)))
                        continue
                    probing = True
                self._wake.clear()
                limit = self.publisher.max_batch_entries if probing else rs.batch_size
                try:
                    if prefetch is not None:
                        claim, prefetch = prefetch, None
                        rows = await claim
                        if not rows:
                            # Made while the rows in hand were leased, so it may have found only events
                            # waiting behind them (a backlog of a few aggregates): ask again, now.
                            rows = await self._claim(limit)
                    else:
                        rows = await self._claim(limit)
                except DB_ERRORS as exc:
                    self._db_failed(exc)
                    if probing:
                        self.circuit.state = CircuitState.OPEN
                    await self._sleep(rs.poll_interval)
                    continue
                self._db_ok()
                if not rows:
                    if probing:
                        self.circuit.state = CircuitState.OPEN  # nothing to probe with; try again later
                    await self._sleep(rs.poll_interval)
                    if self._wake.is_set() and not self._stopping:
                        await asyncio.sleep(WAKE_COALESCE_SECONDS)
                    continue
                if not probing and 2 * len(rows) >= limit:
                    prefetch = asyncio.create_task(self._claim(rs.batch_size))
                await self._publish(rows, probing)
        finally:
            if prefetch is not None:
                await self._release_prefetched(prefetch)

    async def _release_prefetched(self, claim: asyncio.Task[list[_Row]]) -> None:
        """Give back the rows of a claim made ahead that will not be published now (no attempt counted)."""
        try:
            rows = await claim
        except asyncio.CancelledError:
            claim.cancel()
            raise
        except DB_ERRORS:
            return  # nothing came back; whatever it leased is released at shutdown or expires
        if rows:
            await self._acknowledge(_Outcome(released=[r.row_id for r in rows]))

    async def _publish(self, rows: list[_Row], probing: bool) -> None:
        outcome = _Outcome()
        lanes: dict[tuple[str, str], deque[_Row]] = {}
        for row in rows:
            lanes.setdefault((row.message.aggregate_type, row.message.aggregate_id), deque()).append(row)
        while lanes:
            if self._stopping or outcome.broker_error is not None:
                for lane in lanes.values():
                    outcome.released += [r.row_id for r in lane]
                break
            # One round: the next event of every aggregate. A lane that fails stops here.
            round_rows: list[_Row] = []
            for key in list(lanes):
                row = lanes[key].popleft()
                failure = self.publisher.check(row.message)
                if failure is not None:
                    self._refused(row, failure, outcome)
                    self._block(lanes, key, outcome)
                    continue
                round_rows.append(row)
                if not lanes[key]:
                    del lanes[key]
            batches = _pack(round_rows, self.publisher.max_batch_entries, self.publisher.max_batch_bytes)
            results = await asyncio.gather(*(self._send(batch) for batch in batches))
            for batch, result in zip(batches, results, strict=True):
                if isinstance(result, BrokerUnavailableError):
                    outcome.broker_error = result
                    outcome.released += [r.row_id for r in batch]
                    for r in batch:
                        self._block(lanes, (r.message.aggregate_type, r.message.aggregate_id), outcome)
                    continue
                failed = {f.index: f for f in result}
                for index, row in enumerate(batch):
                    entry_failure = failed.get(index)
                    if entry_failure is None:
                        outcome.published.append(row.row_id)
                    else:
                        self._refused(row, entry_failure, outcome)
                        self._block(lanes, (row.message.aggregate_type, row.message.aggregate_id), outcome)
        self._observe(rows, outcome)
        await self._acknowledge(outcome)
        await self._update_circuit(outcome, probing, len(rows))

    def _block(
        self, lanes: dict[tuple[str, str], deque[_Row]], key: tuple[str, str], outcome: _Outcome
    ) -> None:
        """An event of this aggregate failed: its later events wait (released, no attempt counted)."""
        lane = lanes.pop(key, None)
        if lane:
            outcome.released += [r.row_id for r in lane]

    def _refused(self, row: _Row, failure: EntryFailure, outcome: _Outcome) -> None:
        decision = self.retry_policy.decide(row.attempts, failure.reason, permanent=failure.permanent)
        if isinstance(decision, DeadLetter):
            outcome.dead_ids.append(row.row_id)
            outcome.dead_reasons.append(decision.reason)
            log.error(
                "event %s (%s %s) dead-lettered: %s",
                row.message.event_id,
                row.message.aggregate_type,
                row.message.aggregate_id,
                decision.reason,
            )
        else:
            outcome.failed_ids.append(row.row_id)
            outcome.failed_errors.append(failure.reason)
            outcome.failed_delays.append(decision.delay_seconds)
            self.metrics.failed.labels(failure.code).inc()
            log.warning(
                "event %s (%s %s) refused (%s); attempt %d, retrying in %.1f s",
                row.message.event_id,
                row.message.aggregate_type,
                row.message.aggregate_id,
                failure.reason,
                row.attempts + 1,
                decision.delay_seconds,
            )

    async def _send(self, batch: list[_Row]) -> list[EntryFailure] | BrokerUnavailableError:
        async with self._in_flight:
            started = time.perf_counter()
            try:
                result = await self.publisher.send_batch([r.message for r in batch])
            except BrokerUnavailableError as exc:
                return exc
            self.metrics.batch_latency.observe(time.perf_counter() - started)
            return result

    def _observe(self, rows: list[_Row], outcome: _Outcome) -> None:
        if outcome.published:
            self.published_total += len(outcome.published)
            self.metrics.published.inc(len(outcome.published))
            now = dt.datetime.now(dt.UTC)
            published = set(outcome.published)
            for row in rows:
                if row.row_id in published:
                    self.metrics.delivery_latency.observe((now - row.created_at).total_seconds())
        if outcome.dead_ids:
            self.metrics.dead_lettered.inc(len(outcome.dead_ids))

    async def _update_circuit(self, outcome: _Outcome, probing: bool, claimed: int) -> None:
        error = outcome.broker_error
        if error is not None:
            self.metrics.broker_errors.inc()
            if self.circuit.fail(str(error)):
                waiting = await self._backlog()
                log.error(
                    "broker unavailable (%s): circuit open, %s events waiting in the outbox, nothing lost; "
                    "probing with backoff up to %.0f s",
                    error,
                    waiting if waiting is not None else "unknown number of",
                    self.circuit.cap_seconds,
                )
            else:
                log.debug("probe failed (%s); next probe in %.1f s", error, self.circuit.seconds_to_probe())
        elif probing or not self.circuit.closed:
            outage = self.circuit.succeed()
            if outage is not None:
                waiting = await self._backlog()
                log.info(
                    "broker reachable again after %.1f s: circuit closed, %d events published by the probe, "
                    "%s still waiting, draining in order",
                    outage,
                    len(outcome.published),
                    waiting if waiting is not None else "the rest",
                )
                self._wake.set()
        if self.circuit.state is not self._reported_state:
            self._reported_state = self.circuit.state
            self.metrics.circuit.set(CIRCUIT_VALUES[self.circuit.state.value])
            self._report_now.set()

    async def _backlog(self) -> int | None:
        try:
            async with self.pool.connection(timeout=2) as conn:
                cur = await conn.execute(queries.OUTBOX_COUNT)
                row = await cur.fetchone()
                return int(row[0]) if row else 0
        except DB_ERRORS:
            return None

    # -- wake-ups, heartbeats, alerts ------------------------------------------------------------------

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; reconnect forever. Notifications only wake the workers."""
        delay = 0.1
        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True, **KEEPALIVES
                ) as conn:
                    await conn.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
                    self._wake.set()  # anything committed while we were not listening
                    delay = 0.1
                    while not self._stopping:
                        async for _ in conn.notifies(timeout=self.settings.relay.heartbeat_seconds):
                            self._wake.set()
                        await conn.execute("SELECT 1")  # a dead connection shows itself here
            except DB_ERRORS as exc:
                log.debug("listener connection lost (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _heartbeat(self) -> None:
        rs = self.settings.relay
        hostname = socket.gethostname()
        while not self._stopping:
            try:
                async with self.pool.connection(timeout=5) as conn:
                    await conn.execute(
                        queries.RELAY_HEARTBEAT,
                        {
                            "relay_id": self.relay_id,
                            "hostname": hostname,
                            "pid": os.getpid(),
                            "circuit_state": self.circuit.state.value,
                            "circuit_reason": self.circuit.reason,
                        },
                    )
                    health = await read_health(conn, self.settings)
                    await conn.execute(queries.RELAY_PRUNE)
                outbox = health["outbox"]
                self.metrics.backlog.set(outbox["backlog"])
                self.metrics.oldest_age.set(outbox["oldest_age_seconds"])
                self.metrics.dead_letters.set(outbox["dead_letters"])
                await self._check_alert(health)
            except DB_ERRORS as exc:
                self._db_failed(exc)
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._report_now.wait(), rs.heartbeat_seconds)
                self._report_now.clear()

    async def _check_alert(self, health: dict[str, Any]) -> None:
        """Flip the shared alert state; the relay whose flip lands sends the one webhook POST.

        The state is the system's, as `/health` reports it (every live relay's circuit, the oldest event,
        the dead letters), so relays agree and one POST goes out per change.
        """
        degraded = health["status"] == "degraded"
        detail = {**health["outbox"], "reasons": health["reasons"]}
        async with self.pool.connection(timeout=5) as conn:
            cur = await conn.execute(
                queries.ALERT_FLIP,
                {"name": "outbox", "state": "degraded" if degraded else "ok", "detail": json.dumps(detail)},
            )
            flipped = await cur.fetchone()
        if flipped is None:
            return
        log.log(
            logging.WARNING if degraded else logging.INFO,
            "outbox %s: %s",
            "degraded" if degraded else "recovered",
            "; ".join(health["reasons"]) or f"backlog {detail['backlog']}",
        )
        url = self.settings.relay.alert_webhook_url
        if url:
            payload = {
                "alert": "txoutbox.outbox",
                "state": "degraded" if degraded else "recovered",
                "relay": self.relay_id,
                "at": dt.datetime.now(dt.UTC).isoformat(),
                **detail,
            }
            await asyncio.to_thread(_post_json, url, payload)


def _post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - operator-configured http(s) URL
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass
    except OSError as exc:
        # The URL may hold a token: log only where it points.
        host = urllib.parse.urlsplit(url).hostname
        log.warning("alert webhook at %s failed: %s", host, exc)
