"""The payment service: pays each FlightBooked event once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from payments import queries
from payments.queues import MAX_RECEIVE_COUNT
from txoutbox.config import Settings
from txoutbox.consumer import Consumer, InboundEvent, MalformedMessageError

CONSUMER_NAME = "payments"
log = logging.getLogger("payments")


def flight_id_of(event: InboundEvent) -> int:
    data = event.data
    if not isinstance(data, dict) or not isinstance(data.get("id"), int) or isinstance(data.get("id"), bool):
        raise MalformedMessageError(f"event {event.event_id} has no integer data.id (the flight id)")
    return int(data["id"])


async def process_payments(conn: psycopg.AsyncConnection[Any], events: Sequence[InboundEvent]) -> None:
    """Record one payment per new event, in the consumer's transaction (with the inbox rows)."""
    flight_ids = [flight_id_of(e) for e in events]
    for event in events:
        log.info("Flight event received: %s. Processing payment.", event.body)
    await conn.execute(
        queries.INSERT_PAYMENTS, {"event_ids": [e.event_id for e in events], "flight_ids": flight_ids}
    )


def consumer(settings: Settings, *, concurrency: int = 4) -> Consumer:
    """The payment service: a consumer of the flight queue paying each booking once."""
    return Consumer(
        settings,
        CONSUMER_NAME,
        process_payments,
        concurrency=concurrency,
        max_receive_count=MAX_RECEIVE_COUNT,
    )
