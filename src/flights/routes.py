"""The booking service's endpoints, on one APIRouter; the database and settings come as dependencies.

The booking's hot path is one pooled connection, one transaction, one round trip for the flight
(INSERT ... RETURNING), one for its `FlightBooked` event (`txoutbox.writer.add_event_async`), and the commit.
The request body is parsed and validated straight from bytes by pydantic, and the answer is serialised by
orjson without a second validation pass.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from flights import queries
from flights.db import CommitOutcomeUnknown
from flights.deps import ApiSettingsDep, DatabaseDep, SettingsDep
from flights.http import json_response, validation_error
from flights.models import Flight, FlightIn, flight_json
from txoutbox.event import Event
from txoutbox.health import read_health
from txoutbox.writer import add_event_async

log = logging.getLogger("flights")

HEALTH_TIMEOUT_SECONDS = 3.0
MAX_BIGINT = 2**63 - 1
AGGREGATE_TYPE = "Flight"
EVENT_TYPE = "FlightBooked"

_FLIGHT_BODY_SCHEMA = FlightIn.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
_VALIDATION_RESPONSE = {"description": "Validation Error: `detail[].loc` names the field"}

router = APIRouter()


@router.get("/", tags=["health"], summary="Load-balancer check (never touches the database)")
async def root() -> Response:
    return json_response({"service": "flights", "status": "ok"})


def _is_loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:  # not an IP address (a unix socket, a test client's name)
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _without_text(health: dict[str, Any]) -> dict[str, Any]:
    """The health document without any text that may quote the broker (reasons, error messages)."""
    outbox = health.get("outbox", {})
    return {
        "status": health["status"],
        "database": health["database"],
        "outbox": {k: v for k, v in outbox.items() if k == "circuit" or _is_number(v)},
    }


@router.get(
    "/health",
    tags=["health"],
    summary="Database and outbox health",
    responses={503: {"description": "The database does not answer"}},
)
async def health(request: Request, db: DatabaseDep, settings: SettingsDep, api: ApiSettingsDep) -> Response:
    """200 while the database answers, `status` "ok" or "degraded" (events waiting too long, circuit
    open, dead letters); 503 with `status` "down" only when the database does not answer within a few
    seconds. The `reasons` are shown to local clients only (TXOUTBOX_HEALTH_DETAIL); elsewhere they stay
    on `txoutbox status` and in the logs."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            body = await db.run(lambda conn: read_health(conn, settings), wait=HEALTH_TIMEOUT_SECONDS * 2 / 3)
    except Exception as exc:
        log.warning("health: database check failed: %s: %s", type(exc).__name__, exc)
        return json_response({"status": "down", "database": type(exc).__name__}, 503)
    detail = api.health_detail == "always" or (api.health_detail == "loopback" and _is_loopback(request))
    return json_response(body if detail else _without_text(body))


@router.post(
    "/api/flights",
    status_code=201,
    tags=["flights"],
    summary="Book a flight",
    response_model=Flight,
    responses={
        413: {"description": "Request body over 64 KiB"},
        415: {"description": "Content-Type is not JSON"},
        422: _VALIDATION_RESPONSE,
        503: {"description": "Database unavailable"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _FLIGHT_BODY_SCHEMA}},
        }
    },
)
async def book_flight(request: Request, db: DatabaseDep) -> Response:
    """Store the flight and its `FlightBooked` event in one transaction; answer the stored flight."""
    try:
        flight = FlightIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_error(exc, FlightIn) from None
    params = {
        "departure_airport": flight.departure_airport,
        "arrival_airport": flight.arrival_airport,
        "departure_date_time": flight.departure_date_time,
        "arrival_date_time": flight.arrival_date_time,
    }

    async def store(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        committing = False
        try:
            async with conn.transaction():
                cur = await conn.execute(queries.INSERT_FLIGHT, params)
                row = await cur.fetchone()
                assert row is not None  # INSERT ... RETURNING always returns the row
                stored = flight_json(*row)
                # The flight was created by this transaction: its first event needs no aggregate lock.
                await add_event_async(
                    conn, Event(AGGREGATE_TYPE, str(stored["id"]), EVENT_TYPE, stored), new_aggregate=True
                )
                committing = True  # leaving the block sends COMMIT
        except psycopg.OperationalError as exc:
            if committing:  # the booking may have been stored: never book it twice
                raise CommitOutcomeUnknown(str(exc)) from exc
            raise
        return stored

    stored = await db.run(store)
    return json_response(stored, 201, {"location": f"/api/flights/{stored['id']}"})


async def _fetch_all(db: DatabaseDep, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
        cur = await conn.execute(query, params)
        return await cur.fetchall()

    return await db.run(work)


@router.get(
    "/api/flights",
    tags=["flights"],
    summary="List flights, oldest first",
    response_model=list[Flight],
    responses={422: _VALIDATION_RESPONSE},
)
async def list_flights(
    db: DatabaseDep,
    limit: int = Query(50, ge=1, le=500, description="How many flights (1-500)."),
    offset: int = Query(0, ge=0, le=MAX_BIGINT, description="How many to skip."),
) -> Response:
    rows = await _fetch_all(db, queries.LIST_FLIGHTS, {"limit": limit, "offset": offset})
    return json_response([flight_json(*row) for row in rows])


@router.get(
    "/api/flights/{flight_id}",
    tags=["flights"],
    summary="One flight",
    response_model=Flight,
    responses={404: {"description": "No such flight"}, 422: _VALIDATION_RESPONSE},
)
async def get_flight(flight_id: int, db: DatabaseDep) -> Response:
    rows = await _fetch_all(db, queries.GET_FLIGHT, {"id": flight_id}) if 0 < flight_id <= MAX_BIGINT else []
    if not rows:
        return json_response({"detail": f"flight {flight_id} not found"}, 404)
    return json_response(flight_json(*rows[0]))
