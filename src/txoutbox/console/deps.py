"""FastAPI dependencies of the console's routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request

from txoutbox.console.security import require_csrf
from txoutbox.console.state import ConsoleState


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


State = Annotated[ConsoleState, Depends(console_state)]


def connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection from the console's pool, for one request."""
    with state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]
Csrf = Depends(require_csrf)
