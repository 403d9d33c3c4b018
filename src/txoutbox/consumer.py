"""Consumer side: receive from SQS, process each event at most once with an inbox, delete.

For every received batch, one transaction records the event ids in `txoutbox.inbox` and runs the handler for
the ids not seen before; after the commit the messages are deleted. A crash before the delete makes SQS
deliver again; the inbox then recognises the ids, so the handler never runs twice for one event.
A message that cannot be parsed (or whose handling fails) is not deleted: SQS redelivers it, and after the
queue's maxReceiveCount moves it to the dead-letter queue.

In a FIFO queue a received message locks its group: nothing later of the group is handed out until it is
deleted or its visibility timeout ends. So a consumer that dies holding a batch, or a delete that fails,
stalls whole groups for that timeout. Messages are therefore received with a short visibility
(`visibility_seconds`, at most the queue's own), extended while their batch is in hand, so a slow handler
keeps them and a dead consumer gives them up quickly; and a failed delete is retried until it lands or the
messages are visible again anyway (then they come back and the inbox recognises them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from txoutbox import queries
from txoutbox.config import Settings
from txoutbox.connections import DB_ERRORS, aio_sqs_client, open_pool
from txoutbox.errors import TxOutboxError
from txoutbox.inbox_pruner import DEFAULT_RETENTION_DAYS, InboxPruner
from txoutbox.publishers.sqs_client import memoize_user_agent
from txoutbox.publishers.sqs_errors import classify
from txoutbox.tracing import process_span
from txoutbox.wire import InboundEvent, MalformedMessageError, parse_message

__all__ = ["Consumer", "Handler", "InboundEvent", "MalformedMessageError"]

log = logging.getLogger("txoutbox.consumer")

# How long a received message stays ours without a heartbeat (see the module docstring): what a consumer
# that dies holding a batch costs the message groups in it.
DEFAULT_VISIBILITY_SECONDS = 5
DELETE_RETRY_CAP_SECONDS = 1.0


Handler = Callable[[psycopg.AsyncConnection[Any], Sequence[InboundEvent]], Awaitable[None]]


class Consumer:
    """`concurrency` long-polling loops feeding `handler`, each batch in one transaction."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        handler: Handler,
        *,
        concurrency: int = 4,
        wait_seconds: int = 20,
        max_receive_count: int = 10,
        reprocess_replayed: bool = False,
        inbox_retention_days: float = DEFAULT_RETENTION_DAYS,
        visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
    ) -> None:
        if not settings.sqs_queue_url:
            raise TxOutboxError("the consumer needs SQS_QUEUE_URL")
        self.settings = settings
        self.name = name
        self.handler = handler
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self.max_receive_count = max_receive_count
        self.inbox_retention_days = inbox_retention_days  # see txoutbox.inbox_pruner
        self.visibility_seconds = visibility_seconds  # lowered to the queue's own timeout at start
        # A replayed event (`txoutbox replay`) already in the inbox is a duplicate like any other, unless
        # this is set: then the handler runs again for it.
        self.reprocess_replayed = reprocess_replayed
        self.processed = 0
        self.duplicates = 0
        self._stop = asyncio.Event()
        self._deletes: set[asyncio.Task[None]] = set()
        self._broker_down_since: float | None = None
        self._db_down_since: float | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._client: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._pool = await open_pool(
            self.settings.database_url, max_size=self.concurrency + 1, name=f"txoutbox-{self.name}"
        )
        client = aio_sqs_client(
            self.settings.aws_region,
            self.settings.sqs_endpoint_url,
            local=self.settings.local_stack,
            max_connections=self.concurrency * 2,
            read_timeout=self.wait_seconds + 10,
            validate_parameters=False,  # every request is built here, never by a user
        )
        async with AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(client)
            memoize_user_agent(self._client)
            await self._read_queue_visibility()
            log.info(
                "%s consumer started: %d receivers on %s",
                self.name,
                self.concurrency,
                self.settings.sqs_queue_url,
            )
            loops = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]
            pruner = InboxPruner(self._pool, self.name, self.inbox_retention_days)
            loops.append(asyncio.create_task(pruner.run(stop)))
            await stop.wait()
            log.info("%s consumer stopping", self.name)
            await asyncio.gather(*loops, return_exceptions=True)
            if self._deletes:
                await asyncio.gather(*self._deletes, return_exceptions=True)
        await self._pool.close()
        log.info(
            "%s consumer stopped: %d events processed, %d duplicates",
            self.name,
            self.processed,
            self.duplicates,
        )

    async def _read_queue_visibility(self) -> None:
        """Never hold a message longer than the queue itself would (if it cannot be read now: as set)."""
        try:
            response = await self._client.get_queue_attributes(
                QueueUrl=self.settings.sqs_queue_url, AttributeNames=["VisibilityTimeout"]
            )
            queue_seconds = int(response["Attributes"]["VisibilityTimeout"])
        except Exception as exc:
            log.warning("could not read the queue's visibility timeout (%s)", classify(exc))
            return
        self.visibility_seconds = max(1, min(self.visibility_seconds, queue_seconds))

    async def _receive(self) -> list[dict[str, Any]] | None:
        """One long poll; None when told to stop while waiting (the poll is abandoned)."""
        receive = asyncio.ensure_future(
            self._client.receive_message(
                QueueUrl=self.settings.sqs_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self.wait_seconds,
                VisibilityTimeout=self.visibility_seconds,
                AttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
                MessageAttributeNames=["All"],
            )
        )
        stopped = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if receive not in done:
            receive.cancel()
            with contextlib.suppress(BaseException):
                await receive
            return None
        messages: list[dict[str, Any]] = receive.result().get("Messages", [])
        return messages

    async def _loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            in_hand = _InHand(time.monotonic() + self.visibility_seconds)  # from before the request
            try:
                messages = await self._receive()
            except Exception as exc:  # translated in one place: sqs_errors.classify
                failure = classify(exc)
                if self._broker_down_since is None:
                    self._broker_down_since = time.monotonic()
                    log.error("cannot receive from SQS (%s); retrying with backoff", failure)
                await self._pause(delay)
                delay = min(delay * 2, 30.0)
                continue
            if messages is None:
                return
            if self._broker_down_since is not None:
                log.info("SQS reachable again after %.1f s", time.monotonic() - self._broker_down_since)
                self._broker_down_since = None
            delay = 0.5
            if messages:
                async with self._kept_visible(messages, in_hand):
                    await self._handle(messages, in_hand)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    @contextlib.asynccontextmanager
    async def _kept_visible(self, messages: list[dict[str, Any]], held: _InHand) -> AsyncIterator[None]:
        """Extend the batch's visibility every third of it while the block runs."""
        task = asyncio.create_task(self._extend_visibility(messages, held))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _extend_visibility(self, messages: list[dict[str, Any]], held: _InHand) -> None:
        while True:
            await asyncio.sleep(self.visibility_seconds / 3)
            started = time.monotonic()
            try:
                await self._client.change_message_visibility_batch(
                    QueueUrl=self.settings.sqs_queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": m["ReceiptHandle"],
                            "VisibilityTimeout": self.visibility_seconds,
                        }
                        for i, m in enumerate(messages)
                    ],
                )
            except Exception as exc:  # they may be redelivered: the inbox recognises what was handled
                log.warning(
                    "could not extend the visibility of %d messages (%s)", len(messages), classify(exc)
                )
                continue
            held.visible_at = started + self.visibility_seconds

    async def _handle(self, messages: list[dict[str, Any]], in_hand: _InHand) -> None:
        events: list[InboundEvent] = []
        held: set[str] = set()  # groups with an earlier message left on the queue: their later ones wait too
        for message in messages:
            try:
                event = parse_message(message)
            except MalformedMessageError as exc:
                self._malformed(message.get("MessageId", "?"), message, str(exc))
                held.add(str(message.get("Attributes", {}).get("MessageGroupId", "")))
                continue
            if event.aggregate_id not in held:  # the relay's MessageGroupId is the aggregate id
                events.append(event)
        if not events:
            return
        while True:
            try:
                done = await self._process_batch(events)
                break
            except DB_ERRORS as exc:
                # Nothing was committed, nothing deleted: wait for the database; the messages stay ours (their
                # visibility is extended meanwhile, see _kept_visible).
                if self._db_down_since is None:
                    self._db_down_since = time.monotonic()
                    log.error(
                        "database unavailable (%s); holding %d messages", type(exc).__name__, len(events)
                    )
                if self._stop.is_set():
                    return
                await self._pause(1.0)
        if self._db_down_since is not None:
            log.info("database reachable again after %.1f s", time.monotonic() - self._db_down_since)
            self._db_down_since = None
        if done:
            task = asyncio.create_task(self._delete(done, in_hand))
            self._deletes.add(task)
            task.add_done_callback(self._deletes.discard)

    def _malformed(self, message_id: str, message: dict[str, Any], reason: str) -> None:
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        log.error(
            "malformed message %s (receive %d of %d before the DLQ): %s; left on the queue for redrive",
            message_id,
            count,
            self.max_receive_count,
            reason,
        )

    async def process(self, events: Sequence[InboundEvent]) -> list[InboundEvent]:
        """Run the inbox and the handler on `events` as a received batch is run, without SQS
        (txoutbox.testing); return the events a receive loop would delete (handled or duplicates)."""
        if self._pool is not None:
            return await self._process_batch(list(events))
        self._pool = await open_pool(self.settings.database_url, max_size=1, name=f"txoutbox-{self.name}")
        try:
            return await self._process_batch(list(events))
        finally:
            await self._pool.close()
            self._pool = None

    async def _process_batch(self, events: list[InboundEvent]) -> list[InboundEvent]:
        """All events in one transaction; on a handler error, each on its own. Returns the ones to delete."""
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                fresh, duplicates = await self._claim(conn, events)
                if fresh:
                    with process_span(self.settings.sqs_queue_url or "", fresh, fresh[0].message_id):
                        await self.handler(conn, fresh)
        except DB_ERRORS:
            raise
        except Exception as exc:
            if len(events) > 1:
                # One at a time. Once an event fails, the later events of its group (aggregate) are left on
                # the queue too, neither handled nor deleted: SQS delivers them again after it, in order.
                done: list[InboundEvent] = []
                failed_groups: set[str] = set()
                for event in events:
                    if event.aggregate_id in failed_groups:
                        continue
                    handled = await self._process_batch([event])
                    if not handled:
                        failed_groups.add(event.aggregate_id)
                    done += handled
                return done
            self._failed(events[0], exc)  # left on the queue: redelivered, then redriven to the DLQ
            return []
        self.processed += len(fresh)
        self._log_duplicates(duplicates)
        return events

    def _failed(self, event: InboundEvent, exc: Exception) -> None:
        if isinstance(exc, MalformedMessageError):
            self._malformed(
                event.message_id, {"Attributes": {"ApproximateReceiveCount": event.receive_count}}, str(exc)
            )
            return
        log.error(
            "handling event %s failed (receive %d of %d before the DLQ): %s: %s; left on the queue",
            event.event_id,
            event.receive_count,
            self.max_receive_count,
            type(exc).__name__,
            exc,
        )

    async def _claim(
        self, conn: psycopg.AsyncConnection[Any], events: list[InboundEvent]
    ) -> tuple[list[InboundEvent], list[InboundEvent]]:
        cur = await conn.execute(
            queries.INBOX_CLAIM, {"consumer": self.name, "event_ids": [e.event_id for e in events]}
        )
        new = {row[0] for row in await cur.fetchall()}
        fresh: list[InboundEvent] = []
        duplicates: list[InboundEvent] = []
        for event in events:
            if event.event_id in new:
                fresh.append(event)
                new.discard(event.event_id)  # the same event twice in one batch: handle it once
            elif (
                self.reprocess_replayed
                and event.replayed
                and all(e.event_id != event.event_id for e in fresh)
            ):
                fresh.append(event)
            else:
                duplicates.append(event)
        return fresh, duplicates

    def _log_duplicates(self, duplicates: list[InboundEvent]) -> None:
        for event in duplicates:
            self.duplicates += 1
            log.info(
                "duplicate event %s (redelivery, receive %d): already processed, acknowledging",
                event.event_id,
                event.receive_count,
            )

    async def _delete(self, events: list[InboundEvent], held: _InHand) -> None:
        """Delete the handled messages; a failed call is retried while they are still ours: until deleted,
        each locks its FIFO group (see the module docstring)."""
        delay = 0.1
        while True:
            try:
                response = await self._client.delete_message_batch(
                    QueueUrl=self.settings.sqs_queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": e.receipt_handle} for i, e in enumerate(events)],
                )
            except Exception as exc:
                if self._stop.is_set() or time.monotonic() + delay >= held.visible_at:
                    log.warning(
                        "could not delete %d processed messages (%s); "
                        "they will be redelivered and recognised",
                        len(events),
                        classify(exc),
                    )
                    return
                await self._pause(delay)
                delay = min(delay * 2, DELETE_RETRY_CAP_SECONDS)
                continue
            for failure in response.get("Failed", []):
                log.warning(
                    "could not delete message of event %s (%s); it will be redelivered and recognised",
                    events[int(failure["Id"])].event_id,
                    failure.get("Message"),
                )
            return


class _InHand:
    """When a received batch becomes visible to other consumers again (monotonic clock)."""

    def __init__(self, visible_at: float) -> None:
        self.visible_at = visible_at
