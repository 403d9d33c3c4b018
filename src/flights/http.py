"""HTTP plumbing of the booking service, apart from its routes: JSON responses, the request-body limit
(413), the JSON-only rule for state-changing requests (415), and how errors are shaped (422, 503, 500; a
client gone mid-request is an info line, not an error)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

log = logging.getLogger("flights")

MAX_BODY_BYTES = 65_536
# Methods that send a body to change state. A browser sends a cross-site POST with a form, text/plain or
# untyped Blob body without asking first (no CORS preflight); requiring application/json, which a browser
# only sends cross-site after a preflight this API never grants, makes every such request a 415.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (FastAPI's own ORJSONResponse is deprecated)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, serialised once by orjson (no response-model validation pass)."""
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_json(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`, with any parameters (charset)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonOnly:
    """Pure ASGI middleware: 415 for a POST, PUT or PATCH whose Content-Type is not JSON (or is absent)."""

    detail = orjson.dumps({"detail": "Content-Type must be application/json"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if not is_json(content_type.decode("latin-1")):
                await _send_json(send, 415, self.detail)
                return
        await self.app(scope, receive, send)


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
                    await _send_json(send, 413, self.detail)
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
            await _send_json(send, 413, self.detail)


def validation_error(exc: ValidationError, model: type[BaseModel]) -> RequestValidationError:
    """pydantic's errors in FastAPI's 422 shape (`loc` starts with "body"), safe to serialise."""
    fields = ", ".join(f.alias or name for name, f in model.model_fields.items())
    errors: list[dict[str, Any]] = []
    for raw in exc.errors(include_url=False):
        error: dict[str, Any] = dict(raw)
        error["loc"] = ("body", *error["loc"])
        if error["type"] == "extra_forbidden":
            error["msg"] = f"unknown field; the fields are {fields}"
        if isinstance(error.get("input"), bytes | bytearray):  # the raw body of a json_invalid error
            error["input"] = bytes(error["input"][:200]).decode("utf-8", "replace")
        ctx = error.get("ctx")
        if ctx:  # e.g. an exception object under "error": keep it JSON-serialisable
            error["ctx"] = {k: v if isinstance(v, str | int | float) else str(v) for k, v in ctx.items()}
        errors.append(error)
    return RequestValidationError(errors)


def install(app: FastAPI) -> None:
    """The middleware and error handlers: never a traceback or a database message in an answer."""
    app.add_middleware(JsonOnly)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return json_response({"detail": "database unavailable"}, 503)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, exc: Exception) -> Response:
        # The client left while its body was being read: nothing failed here and nobody reads an answer.
        # 499 is nginx's "client closed request", for whatever logs the response.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"detail": "internal server error"}, 500)
