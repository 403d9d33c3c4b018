"""What routes depend on, resolved per request from the app that `create_app` built.

The resolvers are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread, a
thread hop (and GIL hand-over) per request for a one-line attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flights.db import Database
from flights.settings import ApiSettings
from txoutbox.config import Settings


async def database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


async def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def api_settings(request: Request) -> ApiSettings:
    value: ApiSettings = request.app.state.api_settings
    return value


DatabaseDep = Annotated[Database, Depends(database)]
SettingsDep = Annotated[Settings, Depends(settings)]
ApiSettingsDep = Annotated[ApiSettings, Depends(api_settings)]
