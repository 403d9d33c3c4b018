"""Swagger UI served from the installed `swagger-ui-bundle` package: the docs work with no internet.

FastAPI's default docs page loads its JavaScript and CSS from a CDN; here every asset comes from
`/static/swagger-ui/`. The bundled Swagger UI (4.x) reads OpenAPI 3.0 only, while FastAPI describes the API
in OpenAPI 3.1, so the page is given `/swagger-ui/openapi.json`, the same document rewritten in 3.0 terms;
`/openapi.json` stays the authoritative 3.1 document.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

STATIC_PREFIX = "/static/swagger-ui"
SWAGGER_OPENAPI_URL = "/swagger-ui/openapi.json"
DOCS_PATHS = ("/docs", "/swagger-ui/index.html")


def swagger_ui_dir() -> Path:
    """Where the installed package keeps Swagger UI's dist files."""
    return Path(str(swagger_ui_path))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (3.1) -> `X` with `nullable: true` (3.0)."""
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if not isinstance(options, list):
            continue
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == len(options):
            continue
        schema = {k: v for k, v in schema.items() if k != key}
        if len(rest) == 1:
            schema.update(rest[0])
        else:
            schema[key] = rest
        schema["nullable"] = True
    if isinstance(schema.get("type"), list):
        types = [t for t in schema["type"] if t != "null"]
        if len(types) < len(schema["type"]):
            schema["nullable"] = True
        schema["type"] = types[0] if len(types) == 1 else types
    return schema


def _downgrade(node: Any) -> Any:
    if isinstance(node, list):
        return [_downgrade(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = _nullable(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "examples" and isinstance(value, list):  # JSON Schema list -> OpenAPI 3.0 `example`
            if value:
                out.setdefault("example", _downgrade(value[0]))
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, int | float):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        out[key] = _downgrade(value)
    return out


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document FastAPI generates, in the 3.0 dialect Swagger UI 4 understands."""
    doc = copy.deepcopy(document)
    doc["openapi"] = "3.0.3"
    for key in ("components", "paths"):
        if key in doc:
            doc[key] = _downgrade(doc[key])
    return doc


def install_swagger_ui(app: FastAPI, title: str) -> None:
    """Serve the offline Swagger UI at `/docs` and `/swagger-ui/index.html` (the seed's address)."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=swagger_ui_dir()), name="swagger-ui-static")
    cache: dict[str, dict[str, Any]] = {}

    async def swagger_openapi() -> JSONResponse:
        if "doc" not in cache:
            cache["doc"] = openapi_30(app.openapi())
        return JSONResponse(cache["doc"])

    async def swagger_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=SWAGGER_OPENAPI_URL,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PREFIX}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no call to the online validator either
        )

    async def to_index() -> RedirectResponse:
        return RedirectResponse("/swagger-ui/index.html")

    app.add_api_route(SWAGGER_OPENAPI_URL, swagger_openapi, methods=["GET"], include_in_schema=False)
    for path in DOCS_PATHS:
        app.add_api_route(path, swagger_page, methods=["GET"], include_in_schema=False)
    for path in ("/swagger-ui.html", "/swagger-ui", "/swagger-ui/"):
        app.add_api_route(path, to_index, methods=["GET"], include_in_schema=False)
