"""The broker's ceiling: a bare aiobotocore sender, SendMessageBatch of 10, no database, no encoding.

Run as its own process (`python -m benchmarks.fauxqs_limit QUEUE_URL ENDPOINT MESSAGES CONCURRENCY [lean]`),
so it is measured like the relay is: one Python process against fauxqs. Prints one JSON line. `lean` gives
the client the relay's two settings (no client-side parameter validation, User-Agent built once): for
comparison only; the limit the relay is held to is the plain client's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from benchmarks.infra import ARRIVAL, ARRIVAL_AT, DEPARTURE, DEPARTURE_AT, REGION


def _body(n: int, event_id: uuid.UUID) -> str:
    """The same envelope the relay sends (see txoutbox.wire.encode_envelope)."""
    data = {
        "arrivalAirport": ARRIVAL,
        "arrivalDateTime": ARRIVAL_AT,
        "bookingSeq": n,
        "departureAirport": DEPARTURE,
        "departureDateTime": DEPARTURE_AT,
        "id": n,
    }
    return json.dumps(
        {
            "eventId": str(event_id),
            "eventType": "FlightBooked",
            "aggregateType": "Flight",
            "aggregateId": str(n % 10_000 + 1),
            "occurredAt": "2026-11-24T12:00:00.000000Z",
            "data": data,
        },
        separators=(",", ":"),
    )


def entries_for(start: int, count: int) -> list[dict[str, Any]]:
    entries = []
    for i in range(count):
        n = start + i
        event_id = uuid.uuid4()
        entries.append(
            {
                "Id": str(i),
                "MessageBody": _body(n, event_id),
                "MessageGroupId": str(n % 10_000 + 1),
                "MessageDeduplicationId": event_id.hex,
                "MessageAttributes": {
                    "eventType": {"DataType": "String", "StringValue": "FlightBooked"},
                    "eventId": {"DataType": "String", "StringValue": str(event_id)},
                },
            }
        )
    return entries


async def send_all(
    queue_url: str, endpoint: str, messages: int, concurrency: int, lean: bool = False
) -> dict[str, Any]:
    batches = [entries_for(start, min(10, messages - start)) for start in range(0, messages, 10)]
    config = AioConfig(
        max_pool_connections=max(concurrency, 1),
        retries={"total_max_attempts": 1},
        parameter_validation=not lean,
    )
    session: Any = get_session()
    async with session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=config,
    ) as client:
        if lean:
            from txoutbox.publishers.sqs_client import memoize_user_agent

            memoize_user_agent(client)
        # Warm up: connection pool, endpoint resolution, the first request's lazy set-up.
        await client.send_message_batch(QueueUrl=queue_url, Entries=entries_for(10**9, 10))
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)
        failed = 0

        async def sender() -> None:
            nonlocal failed
            while not queue.empty():
                batch = queue.get_nowait()
                response = await client.send_message_batch(QueueUrl=queue_url, Entries=batch)
                failed += len(response.get("Failed", []))

        print("sending", flush=True)
        started = time.perf_counter()
        cpu_started = time.process_time()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    return {
        "messages": messages,
        "concurrency": concurrency,
        "seconds": seconds,
        "events_per_s": messages / seconds,
        "failed": failed,
        "cpu_seconds": cpu_seconds,
    }


def main() -> None:
    queue_url, endpoint, messages, concurrency = sys.argv[1:5]
    lean = sys.argv[5:6] == ["lean"]
    try:
        import uvloop

        result = uvloop.run(send_all(queue_url, endpoint, int(messages), int(concurrency), lean))
    except ImportError:  # pragma: no cover
        result = asyncio.run(send_all(queue_url, endpoint, int(messages), int(concurrency), lean))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
