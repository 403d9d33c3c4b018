"""What keeps the console safe to leave open: host check, optional token, CSRF, security headers.

- Host: on a loopback address only requests naming the console's own host and port are served, so a web page
  that rebinds its DNS name to 127.0.0.1 cannot read the console (DNS rebinding).
- Token: bound beyond loopback the console requires `TXOUTBOX_CONSOLE_TOKEN`, sent as HTTP Basic password
  (the browser asks for it; any user name) or `Authorization: Bearer <token>`.
- Changes of state are POSTs with a JSON body (`Content-Type: application/json`, which a cross-site form
  cannot send without a CORS preflight this app never answers), the per-process CSRF token of the page in the
  `X-CSRF-Token` header, and no foreign `Origin`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

CSRF_HEADER = "X-CSRF-Token"
TOKEN_ENV = "TXOUTBOX_CONSOLE_TOKEN"  # noqa: S105 - the name of the variable, not a secret
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Guard:
    """The console's security settings for one process."""

    port: int
    loopback: bool
    access_token: str | None = None
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def host_allowed(self, host_header: str) -> bool:
        """On loopback, the Host header must name this console; beyond loopback the token protects it."""
        if not self.loopback:
            return True
        return host_header in {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]")}

    def authorized(self, authorization: str | None) -> bool:
        if self.access_token is None:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(given.encode(), self.access_token.encode())


class GuardMiddleware:
    """Checks Host and token before anything runs, and adds the security headers to every answer."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal: Response | None = None
        if not self.guard.host_allowed(headers.get("host", "")):
            refusal = PlainTextResponse("unknown Host header: open the console by its own address", 421)
        elif not self.guard.authorized(headers.get("authorization")):
            refusal = PlainTextResponse(
                "this console needs its token (TXOUTBOX_CONSOLE_TOKEN) as password",
                401,
                headers={"WWW-Authenticate": 'Basic realm="txoutbox console", charset="UTF-8"'},
            )
        send_with_headers = _adding_headers(send)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)


def _adding_headers(send: Send) -> Callable[[MutableMapping[str, Any]], Awaitable[None]]:
    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", []))
            present = {k.lower() for k, _ in raw}
            for name, value in SECURITY_HEADERS.items():
                if name.lower().encode() not in present:
                    raw.append((name.lower().encode(), value.encode()))
            if b"cache-control" not in present:
                raw.append((b"cache-control", b"no-store"))
            message["headers"] = raw
        await send(message)

    return wrapped


def require_csrf(request: Request) -> None:
    """Dependency of every state-changing route: JSON body, the page's CSRF token, no foreign origin."""
    guard: Guard = request.app.state.guard
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "send a JSON body with Content-Type: application/json")
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), guard.csrf_token.encode()):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header: reload the console page")
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and origin not in {f"http://{host}", f"https://{host}"}:
        raise HTTPException(403, f"cross-site request from {origin} refused")
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
