"""The console's FastAPI application: lifespan (pool, sampler), guard, error mapping and static files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import PoolTimeout

from txoutbox.config import Settings
from txoutbox.connections import DB_ERRORS
from txoutbox.console.routes import STATIC, router
from txoutbox.console.sampler import SAMPLE_SECONDS
from txoutbox.console.security import Guard, GuardMiddleware
from txoutbox.console.state import ConsoleState, first_line
from txoutbox.errors import BrokerUnavailableError, ConfigurationError, NotFoundError


def create_app(
    settings: Settings,
    *,
    port: int,
    loopback: bool = True,
    access_token: str | None = None,
    sample_seconds: float = SAMPLE_SECONDS,
) -> FastAPI:
    """The console for the database (and queues) in `settings`, served on `port`."""
    state = ConsoleState(settings, sample_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.pool.open(wait=False)  # a database down at start-up shows as an error on the page
        sampler = asyncio.create_task(state.run_sampler(), name="console-sampler")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await asyncio.to_thread(state.pool.close)

    app = FastAPI(
        title="txoutbox console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.console = state
    app.state.guard = Guard(port=port, loopback=loopback, access_token=access_token)
    app.add_middleware(GuardMiddleware, guard=app.state.guard)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def error(status: int) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handler

    app.add_exception_handler(NotFoundError, error(404))
    app.add_exception_handler(ConfigurationError, error(409))
    app.add_exception_handler(BrokerUnavailableError, error(502))

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
            detail = f"the database is not migrated ({first_line(exc)}): run `txoutbox migrate`"
        else:
            detail = f"cannot reach the database: {first_line(exc)}"
        return JSONResponse({"detail": detail}, status_code=503)

    for failure in (*DB_ERRORS, PoolTimeout, psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        app.add_exception_handler(failure, database_down)
    return app
