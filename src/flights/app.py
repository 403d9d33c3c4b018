"""The booking service: the seed's REST API on FastAPI, writing each booking and its event in ONE transaction.

    app = create_app(Settings.from_env())      # uvicorn.run(app, host="127.0.0.1", port=8080)

Endpoints (`flights.routes`): `POST /api/flights`, `GET /api/flights?limit=&offset=`, `GET /api/flights/{id}`,
`GET /` (the load balancer's check: never touches the database), `GET /health` (database and outbox, see
`txoutbox.health`), Swagger UI at `/docs` and `/swagger-ui/index.html` (offline, see `flights.assets`).
HTTP plumbing (413, 415, error shapes) is in `flights.http`, the pool and its retry in `flights.db`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from flights import http
from flights.assets import install_swagger_ui
from flights.db import Database
from flights.routes import router
from flights.settings import ApiSettings
from txoutbox.config import Settings


def create_app(settings: Settings, api_settings: ApiSettings | None = None) -> FastAPI:
    """The booking service for `settings.database_url` ("" lets libpq's PGHOST & co. decide)."""
    database = Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open()
        try:
            yield
        finally:
            await database.close()

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
        default_response_class=http.OrjsonResponse,
    )
    app.state.database = database
    app.state.settings = settings
    app.state.api_settings = api_settings or ApiSettings.from_env()
    http.install(app)
    app.include_router(router)  # first: routes are matched in order, and bookings are the hot path
    install_swagger_ui(app, "Flights booking service")
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (used by `txoutbox api --workers N`): settings from the environment."""
    return create_app(Settings.from_env())
