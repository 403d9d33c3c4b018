"""The booking service over HTTP (in process, through its ASGI interface) on a real PostgreSQL.

Each test gets a fresh migrated database (`database_url`) and an app whose lifespan (the connection pool)
runs for the test. Nothing is mocked except where a fault is injected on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import httpx
import orjson
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.conninfo import conninfo_to_dict

import flights.db as flights_db
import flights.routes as flights_routes
from flights.app import create_app
from tests.helpers import apoll, db_only_settings
from txoutbox.health import read_health_sync

PARIS_LONDON = {
    "departureAirport": "Paris",
    "arrivalAirport": "London",
    "departureDateTime": "2023-09-01T08:00:00.000Z",
    "arrivalDateTime": "2023-09-01T08:15:00.000Z",
}


@pytest.fixture
def app(database_url: str) -> FastAPI:
    return create_app(db_only_settings(database_url))


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://flights.test") as client:
            yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(app):
        yield c


def flight_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id, departure_airport, arrival_airport FROM public.flights").fetchall()


def outbox_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT aggregate_type, aggregate_id, event_type, payload FROM txoutbox.outbox ORDER BY id"
    ).fetchall()


def book(**changes: Any) -> dict[str, Any]:
    body = dict(PARIS_LONDON)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


# ---------------------------------------------------------------------------------------------- booking


async def test_post_stores_flight_and_its_event_together(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    response = await client.post("/api/flights", json=PARIS_LONDON)

    assert response.status_code == 201, response.text
    flight = response.json()
    assert isinstance(flight["id"], int)
    assert flight == {
        "id": flight["id"],
        "departureAirport": "Paris",
        "arrivalAirport": "London",
        "departureDateTime": "2023-09-01T08:00:00Z",
        "arrivalDateTime": "2023-09-01T08:15:00Z",
    }
    assert response.headers["location"] == f"/api/flights/{flight['id']}"
    assert response.headers["content-type"] == "application/json"
    assert flight_rows(conn) == [(flight["id"], "Paris", "London")]
    assert outbox_rows(conn) == [("Flight", str(flight["id"]), "FlightBooked", flight)]


async def test_a_booking_never_waits_for_a_worker_thread(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    # The booking path runs on the event loop alone (FastAPI would run a plain `def` dependency in a worker
    # thread: a hop per request). With the thread pool's only token held, a booking still completes.
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    release = threading.Event()
    limiter.total_tokens = 1
    blocker = asyncio.ensure_future(anyio.to_thread.run_sync(release.wait))
    try:
        assert await apoll(lambda: limiter.borrowed_tokens == 1, timeout=5)
        response = await asyncio.wait_for(client.post("/api/flights", json=PARIS_LONDON), 10)
        assert response.status_code == 201, response.text
        assert flight_rows(conn) == [(response.json()["id"], "Paris", "London")]
    finally:
        release.set()
        await blocker
        limiter.total_tokens = tokens


async def test_post_normalises_offsets_to_utc_and_trims_airports(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    response = await client.post(
        "/api/flights",
        json=book(
            departureAirport="  Paris CDG ",
            departureDateTime="2023-09-01T10:00:00+02:00",
            arrivalDateTime="2023-09-01T09:15:00.250+01:00",
        ),
    )
    assert response.status_code == 201, response.text
    flight = response.json()
    assert flight["departureAirport"] == "Paris CDG"
    assert flight["departureDateTime"] == "2023-09-01T08:00:00Z"
    assert flight["arrivalDateTime"] == "2023-09-01T08:15:00.250Z"
    assert outbox_rows(conn)[0][3] == flight


async def test_airport_of_exactly_100_characters_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/flights", json=book(arrivalAirport="A" * 100))
    assert response.status_code == 201, response.text


async def test_each_booking_gets_its_own_event(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    ids = []
    for _ in range(3):
        response = await client.post("/api/flights", json=PARIS_LONDON)
        assert response.status_code == 201
        ids.append(response.json()["id"])
    assert len(set(ids)) == 3
    assert [row[1] for row in outbox_rows(conn)] == [str(i) for i in ids]


# ---------------------------------------------------------------------------------------------- reading


async def test_list_pages_by_limit_and_offset_in_id_order(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        response = await client.post("/api/flights", json=book(arrivalAirport=f"City {i}"))
        ids.append(response.json()["id"])

    async def page(**params: Any) -> list[int]:
        response = await client.get("/api/flights", params=params)
        assert response.status_code == 200, response.text
        return [f["id"] for f in response.json()]

    assert await page() == ids
    assert await page(limit=2) == ids[:2]
    assert await page(limit=2, offset=2) == ids[2:4]
    assert await page(limit=2, offset=4) == ids[4:]
    assert await page(offset=10) == []
    assert await page(limit=500) == ids
    listed = (await client.get("/api/flights", params={"limit": 1, "offset": 3})).json()
    assert listed == [(await client.get(f"/api/flights/{ids[3]}")).json()]


async def test_list_limit_defaults_to_50(client: httpx.AsyncClient, conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO public.flights"
        " (departure_airport, arrival_airport, departure_date_time, arrival_date_time)"
        " SELECT 'A' || g, 'B' || g, now(), now() + interval '1 hour' FROM generate_series(1, 60) AS g"
    )
    response = await client.get("/api/flights")
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 50
    assert [f["departureAirport"] for f in body[:2]] == ["A1", "A2"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
    ],
)
async def test_list_bounds_are_422(client: httpx.AsyncClient, params: dict[str, Any], field: str) -> None:
    response = await client.get("/api/flights", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


async def test_get_by_id(client: httpx.AsyncClient) -> None:
    created = (await client.post("/api/flights", json=PARIS_LONDON)).json()

    found = await client.get(f"/api/flights/{created['id']}")
    assert found.status_code == 200
    assert found.json() == created

    for missing in (created["id"] + 1000, 0, -5, 2**70):
        response = await client.get(f"/api/flights/{missing}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"flight {missing} not found"}

    response = await client.get("/api/flights/abc")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "flight_id"]


async def test_root_answers_for_the_load_balancer(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"service": "flights", "status": "ok"}


# ---------------------------------------------------------------------------------------------- validation


def _only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


@pytest.mark.parametrize(
    ("changes", "loc", "msg"),
    [
        ({"departureAirport": ""}, ["body", "departureAirport"], "must not be blank"),
        ({"arrivalAirport": "   \t "}, ["body", "arrivalAirport"], "must not be blank"),
        ({"arrivalAirport": "A" * 101}, ["body", "arrivalAirport"], "must be at most 100 characters"),
        ({"departureAirport": "Par\x00is"}, ["body", "departureAirport"], "control characters"),
        ({"departureAirport": 42}, ["body", "departureAirport"], "valid string"),
        ({"departureDateTime": None}, ["body", "departureDateTime"], "Field required"),
        ({"arrivalDateTime": None}, ["body", "arrivalDateTime"], "Field required"),
        ({"departureDateTime": "yesterday"}, ["body", "departureDateTime"], "must be an ISO-8601 date-time"),
        ({"arrivalDateTime": "2023-02-30T08:00:00Z"}, ["body", "arrivalDateTime"], "ISO-8601"),
        ({"departureDateTime": 1693555200}, ["body", "departureDateTime"], "date-time string"),
        (
            {"departureDateTime": "2023-09-01T08:00:00"},
            ["body", "departureDateTime"],
            "must include a time zone offset, e.g. Z",
        ),
        (
            {"arrivalDateTime": "2023-09-01T08:00:00Z"},
            ["body", "arrivalDateTime"],
            "must be after departureDateTime",
        ),
        (
            {"arrivalDateTime": "2023-09-01T07:00:00Z"},
            ["body", "arrivalDateTime"],
            "must be after departureDateTime",
        ),
        ({"price": 12}, ["body", "price"], "unknown field"),
    ],
)
async def test_invalid_booking_is_422_naming_the_field(
    client: httpx.AsyncClient,
    conn: psycopg.Connection[Any],
    changes: dict[str, Any],
    loc: list[str],
    msg: str,
) -> None:
    body = dict(PARIS_LONDON)
    for key, value in changes.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    error = _only_error(await client.post("/api/flights", json=body))
    assert error["loc"] == loc
    assert msg in error["msg"]
    assert flight_rows(conn) == []
    assert outbox_rows(conn) == []


async def test_every_invalid_field_is_reported_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/flights",
        json={"departureAirport": " ", "departureDateTime": "2023-09-01T08:00:00", "extra": True},
    )
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert locs == {
        ("body", "departureAirport"),
        ("body", "arrivalAirport"),
        ("body", "departureDateTime"),
        ("body", "arrivalDateTime"),
        ("body", "extra"),
    }


@pytest.mark.parametrize(
    ("content", "type_"),
    [
        (b"{not json", "json_invalid"),
        (b"", "json_invalid"),
        (b"\xff\xfe{}", "json_invalid"),
        (b"[1, 2]", "model_type"),
        (b'"Paris"', "model_type"),
        (b"null", "model_type"),
    ],
)
async def test_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, content: bytes, type_: str
) -> None:
    response = await client.post(
        "/api/flights", content=content, headers={"content-type": "application/json"}
    )
    error = _only_error(response)
    assert error["loc"] == ["body"]
    assert error["type"] == type_


async def test_body_that_is_not_json_is_refused_by_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/flights", data={"departureAirport": "Paris"})
    assert response.status_code == 415
    assert response.json() == {"detail": "Content-Type must be application/json"}
    response = await client.post(
        "/api/flights", content=orjson.dumps(PARIS_LONDON), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # fetch() with a Blob of no type: no preflight, no Content-Type
        "text/plain",  # a cross-site form with enctype=text/plain can carry a JSON-looking body
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
    ],
)
async def test_state_changing_request_without_json_content_type_is_415(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any], content_type: str | None
) -> None:
    request = client.build_request("POST", "/api/flights", content=orjson.dumps(PARIS_LONDON))
    if content_type is not None:
        request.headers["content-type"] = content_type
    assert ("content-type" in request.headers) == (content_type is not None)
    response = await client.send(request)
    assert response.status_code == 415
    assert response.json() == {"detail": "Content-Type must be application/json"}
    assert flight_rows(conn) == [] and outbox_rows(conn) == []
    ok = await client.post(
        "/api/flights",
        content=orjson.dumps(PARIS_LONDON),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201


# ---------------------------------------------------------------------------------------------- dates


@pytest.fixture
async def tokyo_client(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose connections' session time zone is east of UTC (libpq reads PGTZ)."""
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")
    with psycopg.connect(database_url) as c:
        assert c.execute("SHOW timezone").fetchone() == ("Asia/Tokyo",)
    async for c in _client(create_app(db_only_settings(database_url))):
        yield c


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (
            "arrivalDateTime",
            "9999-12-31T23:59Z",
        ),  # year 10000 in Tokyo: PostgreSQL stores it, Python cannot read it
        ("arrivalDateTime", "9999-12-31T00:00:00Z"),
        ("arrivalDateTime", "9999-12-31T23:59:59.999999-14:00"),  # beyond 9999 once in UTC
        ("departureDateTime", "0001-01-01T00:00:00Z"),
        ("departureDateTime", "0001-01-01T10:00:00+14:00"),  # before year 1 once in UTC
    ],
)
async def test_dates_that_cannot_be_read_back_are_422_not_500(
    tokyo_client: httpx.AsyncClient, conn: psycopg.Connection[Any], field: str, value: str
) -> None:
    response = await tokyo_client.post("/api/flights", json=book(**{field: value}))
    error = _only_error(response)
    assert error["loc"] == ["body", field]
    assert error["msg"] == "must be between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z (UTC)"
    assert flight_rows(conn) == [] and outbox_rows(conn) == []


async def test_the_extreme_accepted_dates_round_trip_east_of_utc(tokyo_client: httpx.AsyncClient) -> None:
    body = book(departureDateTime="0001-01-02T00:00:00Z", arrivalDateTime="9999-12-30T23:59:59Z")
    created = await tokyo_client.post("/api/flights", json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["departureDateTime"], created.json()["arrivalDateTime"]) == (
        "0001-01-02T00:00:00Z",
        "9999-12-30T23:59:59Z",
    )
    listed = (await tokyo_client.get(f"/api/flights/{created.json()['id']}")).json()
    assert listed == created.json()


# ---------------------------------------------------------------------------------------------- 413


async def test_body_over_64_kib_is_413_with_content_length(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    big = b'{"departureAirport": "' + b"x" * (70 * 1024) + b'"}'
    request = client.build_request(
        "POST", "/api/flights", content=big, headers={"content-type": "application/json"}
    )
    assert request.headers["content-length"] == str(len(big))
    response = await client.send(request)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 65536 bytes"}
    assert flight_rows(conn) == []


async def test_chunked_body_over_64_kib_is_413(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"departureAirport": "'
        for _ in range(70):
            sent.append(1)
            yield b"x" * 1024
        yield b'"}'

    request = client.build_request(
        "POST", "/api/flights", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 65536 bytes"}
    assert len(sent) <= 70
    assert flight_rows(conn) == []


async def test_body_of_exactly_64_kib_is_not_413(client: httpx.AsyncClient) -> None:
    body = b'{"departureAirport": "' + b"x" * (65536 - 24) + b'"}'
    assert len(body) == 65536
    response = await client.post("/api/flights", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422  # read and validated: too long an airport, missing fields

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:30000]
        yield body[30000:]

    response = await client.post(
        "/api/flights", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


# ---------------------------------------------------------------------------------------------- atomicity


async def test_a_client_gone_mid_body_is_a_disconnect_not_an_error(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """The server tells the app the client left (`http.disconnect`) while the body is still coming."""
    incoming = [
        {"type": "http.request", "body": b'{"departureAirport": "Par', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/flights",
        "raw_path": b"/api/flights",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"flights.test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    with caplog.at_level(logging.DEBUG, logger="flights"):
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
    flights_records = [r for r in caplog.records if r.name == "flights"]
    assert [r.levelno for r in flights_records] == [logging.INFO]
    assert "client disconnected" in flights_records[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] != [500]


async def test_failed_event_insert_stores_no_flight(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def failing_add_event(db: Any, event: Any, **kwargs: Any) -> Any:
        # the flight row has been inserted in this very transaction...
        cur = await db.execute(
            "SELECT count(*) FROM public.flights WHERE id = %s", (int(event.aggregate_id),)
        )
        calls.append(f"flight visible in the transaction: {(await cur.fetchone())[0]}")
        raise RuntimeError("outbox insert failed (injected)")

    monkeypatch.setattr(flights_routes, "add_event_async", failing_add_event)

    response = await client.post("/api/flights", json=PARIS_LONDON)

    assert calls == ["flight visible in the transaction: 1"]
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "Traceback" not in response.text
    assert "injected" not in response.text
    assert flight_rows(conn) == []  # ...and rolled back with the failed event
    assert outbox_rows(conn) == []


async def test_event_insert_failing_in_the_database_stores_no_flight(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        """
        CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'outbox refuses (injected)'; END $$
        """
    )
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON txoutbox.outbox FOR EACH ROW EXECUTE FUNCTION public.refuse()"
    )

    response = await client.post("/api/flights", json=PARIS_LONDON)

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "injected" not in response.text
    assert flight_rows(conn) == []
    assert outbox_rows(conn) == []

    conn.execute("DROP TRIGGER refuse ON txoutbox.outbox")
    response = await client.post("/api/flights", json=PARIS_LONDON)
    assert response.status_code == 201  # the pool's connection is clean again
    assert len(flight_rows(conn)) == 1
    assert len(outbox_rows(conn)) == 1


async def test_database_error_on_post_is_503_without_details(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost_connection(db: Any, event: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly (injected)")

    monkeypatch.setattr(flights_routes, "add_event_async", lost_connection)
    response = await client.post("/api/flights", json=PARIS_LONDON)
    assert response.status_code == 503
    assert response.json() == {"detail": "database unavailable"}
    assert flight_rows(conn) == []


# ---------------------------------------------------------------------------------------------- health


async def test_health_ok_counts_the_backlog(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "outbox": {
            "backlog": 0,
            "oldest_age_seconds": 0.0,
            "retrying": 0,
            "dead_letters": 0,
            "circuit": "unknown",
            "relays": 0,
        },
        "reasons": [],
    }

    for _ in range(2):
        assert (await client.post("/api/flights", json=PARIS_LONDON)).status_code == 201
    body = (await client.get("/health")).json()
    assert body["status"] == "ok"
    assert body["outbox"]["backlog"] == 2
    assert 0 <= body["outbox"]["oldest_age_seconds"] < 60


async def test_health_degraded_when_the_oldest_event_is_too_old_but_still_200(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO txoutbox.outbox"
        " (event_id, aggregate_type, aggregate_id, event_type, payload, created_at)"
        " VALUES (gen_random_uuid(), 'Flight', '1', 'FlightBooked', '{}', now() - interval '2 minutes')"
    )
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] == "ok"
    assert body["outbox"]["backlog"] == 1
    assert body["outbox"]["oldest_age_seconds"] >= 120
    assert "oldest waiting event" in body["reasons"][0]


async def test_health_threshold_comes_from_settings(database_url: str) -> None:
    app = create_app(db_only_settings(database_url, degraded_after_seconds=0))
    async for client in _client(app):
        assert (await client.post("/api/flights", json=PARIS_LONDON)).status_code == 201
        deadline = time.monotonic() + 5
        body = (await client.get("/health")).json()
        while body["outbox"]["oldest_age_seconds"] <= 0 and time.monotonic() < deadline:
            body = (await client.get("/health")).json()
        assert body["status"] == "degraded"


def _relay(conn: psycopg.Connection[Any], relay_id: str, state: str, age: str = "0 seconds") -> None:
    conn.execute(
        "INSERT INTO txoutbox.relays (relay_id, hostname, pid, circuit_state, circuit_reason, heartbeat_at)"
        " VALUES (%s, 'host', 1, %s, %s, now() - CAST(%s AS interval))",
        (relay_id, state, None if state == "closed" else "AccessDenied: denied", age),
    )


async def test_health_reports_the_circuit_of_live_relays(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    _relay(conn, "stale", "open", age="1 hour")  # not live: ignored
    body = (await client.get("/health")).json()
    assert (body["status"], body["outbox"]["circuit"], body["outbox"]["relays"]) == ("ok", "unknown", 0)

    _relay(conn, "r1", "closed")
    body = (await client.get("/health")).json()
    assert (body["status"], body["outbox"]["circuit"], body["outbox"]["relays"]) == ("ok", "closed", 1)

    _relay(conn, "r2", "open")
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["outbox"]["circuit"], body["outbox"]["relays"]) == ("degraded", "open", 2)
    assert any("AccessDenied" in r for r in body["reasons"])


ARN = "arn:aws:sqs:eu-west-1:123456789012:flightQueue.fifo"


async def _health_as(app: FastAPI, client_ip: str) -> dict[str, Any]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://flights.test") as client:
            response = await client.get("/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("mode", "client_ip", "detailed"),
    [
        (None, "127.0.0.1", True),  # default: a local operator's curl sees why
        (None, "::1", True),
        (None, "10.0.3.17", False),  # default: the load balancer (or anyone through it) sees no text
        ("never", "127.0.0.1", False),
        ("always", "10.0.3.17", True),
    ],
)
async def test_health_details_only_for_local_clients(
    database_url: str,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    mode: str | None,
    client_ip: str,
    detailed: bool,
) -> None:
    conn.execute(
        "INSERT INTO txoutbox.relays (relay_id, hostname, pid, circuit_state, circuit_reason, heartbeat_at)"
        " VALUES ('r1', 'host', 1, 'open', %s, now())",
        (f"AccessDenied: User is not authorized to perform sqs:SendMessage on {ARN}",),
    )
    if mode is None:
        monkeypatch.delenv("TXOUTBOX_HEALTH_DETAIL", raising=False)
    else:
        monkeypatch.setenv("TXOUTBOX_HEALTH_DETAIL", mode)
    body = await _health_as(create_app(db_only_settings(database_url)), client_ip)
    assert (body["status"], body["outbox"]["circuit"], body["outbox"]["relays"]) == ("degraded", "open", 1)
    if detailed:
        assert any(ARN in reason for reason in body["reasons"])
    else:
        assert "reasons" not in body
        assert "arn:" not in orjson.dumps(body).decode() and "AccessDenied" not in orjson.dumps(body).decode()


def test_bad_health_detail_setting_is_refused(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from txoutbox.errors import ConfigurationError

    monkeypatch.setenv("TXOUTBOX_HEALTH_DETAIL", "yes please")
    with pytest.raises(
        ConfigurationError, match="TXOUTBOX_HEALTH_DETAIL must be one of loopback, always, never"
    ):
        create_app(db_only_settings(database_url))


async def test_health_degraded_with_dead_letters(
    client: httpx.AsyncClient, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO txoutbox.dead_letters"
        " (id, event_id, aggregate_type, aggregate_id, event_type, payload, created_at, attempts, reason)"
        " VALUES (1, gen_random_uuid(), 'Flight', '1', 'FlightBooked', '{}', now(), 1, 'too big')"
    )
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["outbox"]["dead_letters"] == 1


def test_read_health_sync_matches_the_endpoint_shape(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    body = read_health_sync(conn, db_only_settings(database_url))
    assert body["status"] == "ok"
    assert set(body["outbox"]) == {
        "backlog",
        "oldest_age_seconds",
        "retrying",
        "dead_letters",
        "circuit",
        "relays",
    }


async def test_requests_survive_the_pools_connections_dying(
    client: httpx.AsyncClient, database_url: str, postgres: Any
) -> None:
    """A database restart or failover kills every pooled connection: the next requests still succeed."""
    assert (await client.get("/health")).status_code == 200
    with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (conninfo_to_dict(database_url)["dbname"],),
        ).fetchone()[0]
    assert killed >= 1  # the pool's min_size

    created = await client.post("/api/flights", json=PARIS_LONDON)
    assert created.status_code == 201, created.text
    assert (await client.get(f"/api/flights/{created.json()['id']}")).status_code == 200
    assert (await client.get("/health")).json()["outbox"]["backlog"] == 1


async def test_database_unreachable_is_503_and_recovers(
    database_url: str, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # shorter waits than production's 3 s (health) and 5 s (a pooled connection): a quick test
    monkeypatch.setattr(flights_routes, "HEALTH_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(flights_db, "POOL_WAIT_SECONDS", 1.0)
    async for client in _client(create_app(db_only_settings(database_url))):
        await _database_unreachable_is_503_and_recovers(client, database_url, postgres)


async def _database_unreachable_is_503_and_recovers(
    client: httpx.AsyncClient, database_url: str, postgres: Any
) -> None:
    assert (await client.get("/health")).status_code == 200
    name = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
        # new connections refused, the pool's connections killed: the database is gone for the app
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            response = await client.get("/health")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "down"
            assert re.fullmatch(r"[A-Za-z]+", body["database"]), body  # an error class, no details

            response = await client.post("/api/flights", json=PARIS_LONDON)
            assert response.status_code == 503
            assert response.json() == {"detail": "database unavailable"}

            root = await client.get("/")  # the load balancer's check never touches the database
            assert root.status_code == 200
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    deadline = time.monotonic() + 20
    status = 0
    while time.monotonic() < deadline and status != 200:
        status = (await client.get("/health")).status_code
    assert status == 200  # the pool reconnected on its own
    with psycopg.connect(database_url) as c:
        assert flight_rows(c) == []


# ---------------------------------------------------------------------------------------------- swagger

_URL_ATTR = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.mark.parametrize("path", ["/docs", "/swagger-ui/index.html"])
async def test_swagger_ui_is_served_from_local_assets(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://|//cdn|jsdelivr|unpkg", html), (
        "the docs page must not load from the internet"
    )
    urls = [a or b for a, b in _URL_ATTR.findall(html)]
    assert len(urls) >= 4, urls  # css, favicon, js, the OpenAPI document
    for url in urls:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0


async def test_openapi_documents(client: httpx.AsyncClient) -> None:
    native = (await client.get("/openapi.json")).json()
    assert native["openapi"].startswith("3.1")
    for_swagger = (await client.get("/swagger-ui/openapi.json")).json()
    assert for_swagger["openapi"] == "3.0.3"  # what the bundled Swagger UI 4 can render
    assert set(for_swagger["paths"]) == {"/", "/health", "/api/flights", "/api/flights/{flight_id}"}
    body = for_swagger["paths"]["/api/flights"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["required"] == ["departureAirport", "arrivalAirport", "departureDateTime", "arrivalDateTime"]
    assert (await client.get("/redoc")).status_code == 404
    redirect = await client.get("/swagger-ui.html")
    assert redirect.status_code in (302, 307)
    assert redirect.headers["location"] == "/swagger-ui/index.html"
