"""The booking service: the seed's REST API on FastAPI, writing each booking and its event in ONE transaction.

    app = create_app(Settings.from_env())      # uvicorn.run(app, host="127.0.0.1", port=8080)

Endpoints: `POST /api/flights`, `GET /api/flights?limit=&offset=`, `GET /api/flights/{id}`, `GET /` (the
load balancer's check: never touches the database), `GET /health` (database and outbox, see
`txoutbox.health`), Swagger UI at `/docs` and `/swagger-ui/index.html` (offline, see `flights.assets`).

The booking's hot path is one pooled connection, one transaction, one round trip for the flight
(INSERT ... RETURNING), one for its `FlightBooked` event (`txoutbox.writer.add_event_async`), and the commit.
The request body is parsed and validated straight from bytes by pydantic, and the answer is serialised by
orjson without a second validation pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
import psycopg
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from flights import queries
from flights.assets import install_swagger_ui
from flights.models import Flight, FlightIn, flight_json
from txoutbox.config import Settings
from txoutbox.event import Event
from txoutbox.health import read_health
from txoutbox.writer import add_event_async

log = logging.getLogger("flights")

MAX_BODY_BYTES = 65_536
HEALTH_TIMEOUT_SECONDS = 3.0
POOL_OPEN_TIMEOUT_SECONDS = 10.0
POOL_WAIT_SECONDS = 5.0  # a request waiting longer than this for a connection gets a 503
MAX_BIGINT = 2**63 - 1
AGGREGATE_TYPE = "Flight"
EVENT_TYPE = "FlightBooked"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (FastAPI's own ORJSONResponse is deprecated)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a request body over `max_bytes`.

    A declared Content-Length over the limit is refused before the body is read; a body without one
    (chunked) is counted as it streams, and the request is refused as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = orjson.dumps({"detail": f"request body larger than {max_bytes} bytes"})

    async def _reject(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.detail)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.detail})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server refuses a malformed Content-Length before we see it
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
                break
        received = 0
        too_large = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # whatever the app answers to the aborted read, the client gets the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not (too_large and not started):
                raise
        if too_large and not started:
            await self._reject(send)


class _State:
    pool: AsyncConnectionPool[Any] | None = None


_FIELDS = ", ".join(f.alias or name for name, f in FlightIn.model_fields.items())


def _validation_error(exc: ValidationError) -> RequestValidationError:
    """pydantic's errors in FastAPI's 422 shape (`loc` starts with "body"), safe to serialise."""
    errors: list[dict[str, Any]] = []
    for raw in exc.errors(include_url=False):
        error: dict[str, Any] = dict(raw)
        error["loc"] = ("body", *error["loc"])
        if error["type"] == "extra_forbidden":
            error["msg"] = f"unknown field; the fields are {_FIELDS}"
        if isinstance(error.get("input"), bytes | bytearray):  # the raw body of a json_invalid error
            error["input"] = bytes(error["input"][:200]).decode("utf-8", "replace")
        ctx = error.get("ctx")
        if ctx:  # e.g. an exception object under "error": keep it JSON-serialisable
            error["ctx"] = {k: v if isinstance(v, str | int | float) else str(v) for k, v in ctx.items()}
        errors.append(error)
    return RequestValidationError(errors)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # like FastAPI: no Content-Type, read it as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


_FLIGHT_BODY_SCHEMA = FlightIn.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
_VALIDATION_RESPONSE = {"description": "Validation Error: `detail[].loc` names the field"}


def create_app(settings: Settings) -> FastAPI:
    """The booking service for `settings.database_url` ("" lets libpq's PGHOST & co. decide)."""
    state = _State()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=2,
            max_size=20,
            open=False,
            timeout=POOL_WAIT_SECONDS,
            kwargs={"autocommit": True},
            name="flights",
        )
        await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_SECONDS)
        state.pool = pool
        app.state.pool = pool
        try:
            yield
        finally:
            state.pool = None
            await pool.close()

    def pool() -> AsyncConnectionPool[Any]:
        if state.pool is None:
            raise psycopg.OperationalError("the connection pool is not open")
        return state.pool

    async def with_connection(
        work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], wait: float | None = None
    ) -> T:
        """Run read-only `work` on a pooled connection; once more on a fresh one if that one was dead."""
        for attempt in (0, 1):
            async with pool().connection(timeout=wait) as conn:
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    if attempt or not conn.broken:
                        raise
                    log.info("the pooled connection was dead; retrying on a fresh one")
            await pool().check()
        raise AssertionError("unreachable")

    async def fetch_all(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await with_connection(work)

    app = FastAPI(
        title="Flights booking service",
        version="0.1.0",
        description=(
            "Book flights. Each booking and its `FlightBooked` event are stored in one transaction; "
            "the txoutbox relay publishes the event to SQS."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=OrjsonResponse,
    )
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    install_swagger_ui(app, "Flights booking service")

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _json({"detail": "database unavailable"}, 503)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json({"detail": "internal server error"}, 500)

    @app.get("/", tags=["health"], summary="Load-balancer check (never touches the database)")
    async def root() -> Response:
        return _json({"service": "flights", "status": "ok"})

    @app.get(
        "/health",
        tags=["health"],
        summary="Database and outbox health",
        responses={503: {"description": "The database does not answer"}},
    )
    async def health() -> Response:
        """200 while the database answers, `status` "ok" or "degraded" (events waiting too long, circuit
        open, dead letters: see `reasons`); 503 with `status` "down" only when the database does not
        answer within a few seconds."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                body = await with_connection(
                    lambda conn: read_health(conn, settings), wait=HEALTH_TIMEOUT_SECONDS * 2 / 3
                )
        except Exception as exc:
            log.warning("health: database check failed: %s: %s", type(exc).__name__, exc)
            return _json({"status": "down", "database": type(exc).__name__}, 503)
        return _json(body)

    @app.post(
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
    async def book_flight(request: Request) -> Response:
        """Store the flight and its `FlightBooked` event in one transaction; answer the stored flight."""
        if not _is_json(request.headers.get("content-type")):
            return _json({"detail": "Content-Type must be application/json"}, 415)
        body = await request.body()
        try:
            flight = FlightIn.model_validate_json(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        params = {
            "departure_airport": flight.departure_airport,
            "arrival_airport": flight.arrival_airport,
            "departure_date_time": flight.departure_date_time,
            "arrival_date_time": flight.arrival_date_time,
        }
        for attempt in (0, 1):
            committing = False
            async with pool().connection() as conn:
                try:
                    async with conn.transaction():
                        cur = await conn.execute(queries.INSERT_FLIGHT, params)
                        row = await cur.fetchone()
                        assert row is not None  # INSERT ... RETURNING always returns the row
                        stored = flight_json(*row)
                        await add_event_async(
                            conn, Event(AGGREGATE_TYPE, str(stored["id"]), EVENT_TYPE, stored)
                        )
                        committing = True
                    return _json(stored, 201, {"location": f"/api/flights/{stored['id']}"})
                except psycopg.OperationalError:
                    # A pooled connection found dead before COMMIT was sent (the database restarted, a
                    # failover): nothing was stored, so try once more on a checked one. A failure during
                    # COMMIT is not retried: the booking may have been stored.
                    if attempt or committing or not conn.broken:
                        raise
                    log.info("booking: the pooled connection was dead; retrying on a fresh one")
            await pool().check()
        raise AssertionError("unreachable")

    @app.get(
        "/api/flights",
        tags=["flights"],
        summary="List flights, oldest first",
        response_model=list[Flight],
        responses={422: _VALIDATION_RESPONSE},
    )
    async def list_flights(
        limit: int = Query(50, ge=1, le=500, description="How many flights (1-500)."),
        offset: int = Query(0, ge=0, le=MAX_BIGINT, description="How many to skip."),
    ) -> Response:
        rows = await fetch_all(queries.LIST_FLIGHTS, {"limit": limit, "offset": offset})
        return _json([flight_json(*row) for row in rows])

    @app.get(
        "/api/flights/{flight_id}",
        tags=["flights"],
        summary="One flight",
        response_model=Flight,
        responses={404: {"description": "No such flight"}, 422: _VALIDATION_RESPONSE},
    )
    async def get_flight(flight_id: int) -> Response:
        rows = await fetch_all(queries.GET_FLIGHT, {"id": flight_id}) if 0 < flight_id <= MAX_BIGINT else []
        if not rows:
            return _json({"detail": f"flight {flight_id} not found"}, 404)
        return _json(flight_json(*rows[0]))

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (used by `txoutbox api --workers N`): settings from the environment."""
    return create_app(Settings.from_env())
