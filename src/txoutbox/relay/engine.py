"""The relay's engine: worker loops that claim, publish in rounds per aggregate, and acknowledge.

One process runs `workers` loops. Each loop claims a batch in one statement (a lease, not an open
transaction), publishes it with several `SendMessageBatch` calls in flight, and acknowledges the outcome
in one transaction: published rows deleted, refused ones rescheduled or dead-lettered, the rest released.
A loop claims again while its claims are published (up to CLAIMS_IN_HAND at once): an event committed
under steady load waits for the next claim, not for the sends and acknowledgement of the one before.
No transaction is open while the broker is called. A crashed relay's leases simply expire.

Order: within a claim, the events of one aggregate go out one round at a time (one entry per group per
round), and a lane stops at its first failure, releasing what follows. Across claims and processes, the
claim never hands out an event while an earlier event of its aggregate is leased, backing off or dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from txoutbox.config import Settings
from txoutbox.connections import DB_ERRORS
from txoutbox.errors import BrokerUnavailableError
from txoutbox.metrics import CIRCUIT_VALUES, RelayMetrics, observe_many
from txoutbox.publishers import EntryFailure, Publisher
from txoutbox.relay.alerts import Alerts
from txoutbox.relay.circuit import Circuit
from txoutbox.relay.heartbeat import beat
from txoutbox.relay.lease import Lease
from txoutbox.relay.listener import listen
from txoutbox.relay.retry import DeadLetter, RetryPolicy
from txoutbox.relay.store import ClaimedRow, Outcome, RelayStore
from txoutbox.retention import run_every

log = logging.getLogger("txoutbox.relay")

# After a wake-up, wait this long so the commits of a burst are claimed together (one claim, not ten).
WAKE_COALESCE_SECONDS = 0.002
# The wake-up without a NOTIFY per commit (see queries.INSERT_EVENTS_AND_NOTIFY). While events keep coming,
# a worker whose claim found nothing claims again after BUSY_POLL_SECONDS: writers need not notify. After
# IDLE_AFTER_SECONDS without events the relay announces it is idle (writers notify from then on) and keeps
# polling as long again, for the commits already under way that did not see the announcement; then it
# waits for a notification, with `poll_interval` as the fallback. The first events after a quiet spell
# pay one NOTIFY (and wake the relay at once); a busy system pays none.
BUSY_POLL_SECONDS = 0.003
IDLE_AFTER_SECONDS = 0.05
# Claims one worker loop publishes at once (each in a task of its own; see Relay._worker).
CLAIMS_IN_HAND = 2

Lanes = dict[tuple[str, str], deque[ClaimedRow]]


def pack_batches(rows: Sequence[ClaimedRow], max_entries: int, max_bytes: int) -> list[list[ClaimedRow]]:
    """Cut a round into batches within the broker's entry and byte limits."""
    batches: list[list[ClaimedRow]] = []
    current: list[ClaimedRow] = []
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
        self.store = RelayStore(settings, self.relay_id)
        self.alerts = Alerts(self.store, rs.alert_webhook_url, self.relay_id)
        self._reported_state = self.circuit.state
        self._wake = asyncio.Event()
        self._report_now = asyncio.Event()  # the circuit changed: heartbeat at once, not at the next tick
        self._stopping = False
        self._in_flight = asyncio.Semaphore(rs.max_in_flight)
        self.published_total = 0
        self._work_at = time.monotonic()  # when a claim last found events
        self._idle = False  # announced idle: writers notify
        # Announcing and withdrawing take turns (one round trip at a time): a withdrawal that reached the
        # database before an announcement sent earlier left the relay waiting for notifications no writer
        # sent (until the fallback poll).
        self._idle_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; then finish or release the work in hand and return."""
        rs = self.settings.relay
        await self.store.open()
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
            asyncio.create_task(self._supervise("alerts", self._deliver_alerts), name="alerts"),
        ]
        if rs.retention_days > 0:
            helpers.append(
                asyncio.create_task(
                    self._supervise("retention", lambda: run_every(self.store.maintain_retention)),
                    name="retention",
                )
            )
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
            await self.store.release_all()
            await self.publisher.close()
            await self.store.close()
            log.info("relay %s stopped; %d events published", self.relay_id, self.published_total)

    def _is_stopping(self) -> bool:
        return self._stopping

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
            return
        # A broker-wide misconfiguration (no such queue, not FIFO, denied) opens the circuit now, with its
        # reason, before any event is tried.
        error = await self._probe_broker()
        if error is not None:
            await self._update_circuit(error, 0, probing=False)

    async def _probe_broker(self) -> BrokerUnavailableError | None:
        try:
            await self.publisher.probe()
        except BrokerUnavailableError as exc:
            return exc
        return None

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

    async def _listen(self) -> None:
        await listen(
            self.settings.database_url, self._wake, self.settings.relay.heartbeat_seconds, self._is_stopping
        )

    async def _deliver_alerts(self) -> None:
        await self.alerts.deliver(self.settings.relay.heartbeat_seconds, self._is_stopping)

    async def _heartbeat(self) -> None:
        await beat(
            self.store,
            self.circuit,
            self.metrics,
            self.alerts,
            every_seconds=self.settings.relay.heartbeat_seconds,
            report_now=self._report_now,
            stopping=self._is_stopping,
            published_total=lambda: self.published_total,
        )

    async def _acknowledge(self, outcome: Outcome) -> None:
        await self.store.acknowledge(outcome, self._is_stopping)

    # -- the work loop ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        rs = self.settings.relay
        # A claim is published in a task of its own, and the loop claims again as soon as a claim returns:
        # under steady load an event waits for the next claim (a few ms), not for the previous claim's
        # sends and acknowledgement too. Order holds as between workers: the claim never hands out an event
        # while an earlier event of its aggregate is leased, and rows stay leased until their outcome is
        # written. At most CLAIMS_IN_HAND claims per loop are published at once (leases held, memory); the
        # loop claims only when one is free, so no claimed event waits behind another claim's rounds.
        in_hand: set[asyncio.Task[None]] = set()
        probing = False  # this loop holds the circuit's half-open probe (Circuit.try_probe)
        try:
            while not self._stopping:
                probing = False
                if len(in_hand) >= CLAIMS_IN_HAND:
                    await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in in_hand if t.done()]:
                    in_hand.discard(task)
                    task.result()  # a publication that failed unexpectedly restarts this loop (_supervise)
                if self._stopping:
                    break
                if not self.circuit.closed:
                    if not self.circuit.try_probe():
                        await self._sleep(max(0.01, min(self.circuit.seconds_to_probe(), rs.poll_interval)))
                        continue
                    probing = True
                    # Half-open: first the broker's own check (cheap, and it catches a misconfiguration
                    # a send would not); then, if events wait, a small real batch decides.
                    error = await self._probe_broker()
                    if error is not None:
                        await self._update_circuit(error, 0, probing=True)
                        continue
                self._wake.clear()
                limit = self.publisher.max_batch_entries if probing else rs.batch_size
                try:
                    rows = await self.store.claim(limit)
                except DB_ERRORS as exc:
                    self.store.failed(exc)
                    if probing:
                        self.circuit.abandon_probe()
                    await self._sleep(rs.poll_interval)
                    continue
                self.store.ok()
                if not rows:
                    if probing:
                        # Nothing to publish, but the broker answered the probe: the circuit closes. (Left
                        # open, a relay with nothing to do would report an outage that is over.)
                        await self._update_circuit(None, 0, probing=True)
                    await self._wait_for_work()
                    continue
                await self._got_work()
                if probing:
                    await self._publish(rows, probing)  # the probe's outcome decides what comes next
                else:
                    in_hand.add(asyncio.create_task(self._publish(rows, probing)))
        except asyncio.CancelledError:
            for task in in_hand:
                task.cancel()
            raise
        finally:
            if probing:
                # The probe ended in an unexpected error (the loop restarts): left half-open, the circuit
                # would never probe again and no loop of this relay would claim (it sat idle with a backlog).
                self.circuit.abandon_probe()
            # Stopping: each publication finishes its round and gives back the rest (see _publish).
            for result in await asyncio.gather(*in_hand, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("publication failed at shutdown: %s", result)

    async def _wait_for_work(self) -> None:
        """After a claim that found nothing: poll again soon while events keep coming; after a quiet spell,
        announce idle and wait for a notification (see BUSY_POLL_SECONDS)."""
        quiet = time.monotonic() - self._work_at
        if quiet >= IDLE_AFTER_SECONDS and not self._idle:
            await self._announce_idle()
        if quiet < 2 * IDLE_AFTER_SECONDS or not self._idle:
            await self._sleep(BUSY_POLL_SECONDS)
            return
        await self._sleep(self.settings.relay.poll_interval)
        if self._stopping:
            return
        if self._wake.is_set():
            await asyncio.sleep(WAKE_COALESCE_SECONDS)
        else:  # the fallback poll: still idle, keep the announcement current
            await self._announce_idle()

    async def _announce_idle(self) -> None:
        if self._idle_lock.locked():  # another loop is announcing or withdrawing
            return
        async with self._idle_lock:
            work_at = self._work_at
            self._idle = await self.store.announce_idle(self._idle_valid_seconds())
            if self._work_at != work_at:  # a claim found events meanwhile and left the withdrawal to us
                self._idle = False
                await self.store.withdraw_idle()

    def _idle_valid_seconds(self) -> float:
        # Refreshed at every fallback poll; if the relay dies, writers stop notifying after this long.
        return max(10.0, 3 * self.settings.relay.poll_interval)

    async def _got_work(self) -> None:
        self._work_at = time.monotonic()
        if self._idle and not self._idle_lock.locked():  # else the announcing loop withdraws
            async with self._idle_lock:
                self._idle = False
                await self.store.withdraw_idle()

    async def _publish(self, rows: list[ClaimedRow], probing: bool) -> None:
        outcome = Outcome()
        broker_error: BrokerUnavailableError | None = None
        lanes: Lanes = {}
        for row in rows:
            lanes.setdefault((row.message.aggregate_type, row.message.aggregate_id), deque()).append(row)
        lease = Lease(
            self.store,
            [r.row_id for r in rows],
            min(r.claimed_at for r in rows),
            self.settings.relay.lease_seconds,
        )
        # Every row stays leased (published ones too) until the outcome is written.
        async with lease.kept():
            while lanes:
                self._drop_lost(lanes, lease, outcome)
                short = lanes and not lease.safe_to_send()
                if self._stopping or broker_error is not None or short:
                    if short and not self._stopping:
                        log.warning(
                            "less than half of the lease left (renewal late); giving back %d events",
                            sum(len(lane) for lane in lanes.values()),
                        )
                    for lane in lanes.values():
                        outcome.released += [r.row_id for r in lane]
                    break
                # One round: the next event of every aggregate. A lane that fails stops here.
                round_rows: list[ClaimedRow] = []
                for key in list(lanes):
                    row = lanes[key].popleft()
                    failure = self._oversized(row) or self.publisher.check(row.message)
                    if failure is not None:
                        self._refused(row, failure, outcome)
                        self._block(lanes, key, outcome)
                        continue
                    round_rows.append(row)
                    if not lanes[key]:
                        del lanes[key]
                batches = pack_batches(
                    round_rows, self.publisher.max_batch_entries, self.publisher.max_batch_bytes
                )
                results = await asyncio.gather(*(self._send(batch) for batch in batches))
                for batch, result in zip(batches, results, strict=True):
                    if isinstance(result, BrokerUnavailableError):
                        broker_error = result
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
                            self._block(
                                lanes, (row.message.aggregate_type, row.message.aggregate_id), outcome
                            )
            self._observe(rows, outcome)
            await self._acknowledge(outcome)
        await self._update_circuit(broker_error, len(outcome.published), probing)

    def _oversized(self, row: ClaimedRow) -> EntryFailure | None:
        if row.oversized is None:
            return None
        limit = self.settings.relay.max_message_bytes
        return EntryFailure(
            0,
            "MessageTooLong",
            f"message is over {row.oversized} bytes (its payload alone), "
            f"over the queue's limit of {limit} bytes",
            permanent=True,
        )

    def _drop_lost(self, lanes: Lanes, lease: Lease, outcome: Outcome) -> None:
        """Rows another relay took over are its now: drop them, and give back the rest of their lanes."""
        if not lease.lost:
            return
        for key in list(lanes):
            if any(r.row_id in lease.lost for r in lanes[key]):
                outcome.released += [r.row_id for r in lanes.pop(key) if r.row_id not in lease.lost]

    def _block(self, lanes: Lanes, key: tuple[str, str], outcome: Outcome) -> None:
        """An event of this aggregate failed: its later events wait (released, no attempt counted)."""
        lane = lanes.pop(key, None)
        if lane:
            outcome.released += [r.row_id for r in lane]

    def _refused(self, row: ClaimedRow, failure: EntryFailure, outcome: Outcome) -> None:
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

    async def _send(self, batch: list[ClaimedRow]) -> list[EntryFailure] | BrokerUnavailableError:
        async with self._in_flight:
            started = time.perf_counter()
            try:
                result = await self.publisher.send_batch([r.message for r in batch])
            except BrokerUnavailableError as exc:
                return exc
            self.metrics.batch_latency.observe(time.perf_counter() - started)
            return result

    def _observe(self, rows: list[ClaimedRow], outcome: Outcome) -> None:
        if outcome.published:
            self.published_total += len(outcome.published)
            self.metrics.published.inc(len(outcome.published))
            now = dt.datetime.now(dt.UTC)
            if len(outcome.published) == len(rows):  # the usual outcome: no set of ids needed
                sent = rows
            else:
                published = set(outcome.published)
                sent = [row for row in rows if row.row_id in published]
            observe_many(self.metrics.delivery_latency, [(now - r.created_at).total_seconds() for r in sent])
        if outcome.dead_ids:
            self.metrics.dead_lettered.inc(len(outcome.dead_ids))

    async def _update_circuit(
        self, error: BrokerUnavailableError | None, published: int, probing: bool
    ) -> None:
        if error is not None:
            self.metrics.broker_errors.inc()
            if self.circuit.fail(str(error)):
                waiting = await self.store.backlog()
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
                waiting = await self.store.backlog()
                log.info(
                    "broker reachable again after %.1f s: circuit closed, %d events published by the probe, "
                    "%s still waiting, draining in order",
                    outage,
                    published,
                    waiting if waiting is not None else "the rest",
                )
                self._wake.set()
        if self.circuit.state is not self._reported_state:
            self._reported_state = self.circuit.state
            self.metrics.circuit.set(CIRCUIT_VALUES[self.circuit.state.value])
            self._report_now.set()
