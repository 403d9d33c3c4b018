"""The console's page and its JSON API. Reads go to the database; every POST is CSRF-checked."""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from txoutbox import ops, queries, sqs_admin
from txoutbox.console import fault
from txoutbox.console import queries as console_queries
from txoutbox.console.deps import Conn, Csrf, State
from txoutbox.errors import ConfigurationError
from txoutbox.health import summarize

router = APIRouter()
EventId = Path(ge=1, le=2**63 - 1, description="the event's outbox id")
STATIC = resources.files("txoutbox.console") / "static"
PAGE = STATIC / "index.html"


class Action(BaseModel):
    """The body of a state-changing request: a JSON object (its presence is part of the CSRF defence)."""

    model_config = ConfigDict(extra="forbid")


class FaultSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["allow", "deny", "down"]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    html = PAGE.read_text("utf-8").replace("{{csrf_token}}", request.app.state.guard.csrf_token)
    return HTMLResponse(html)


@router.get("/api/overview")
def overview(state: State, conn: Conn) -> dict[str, Any]:
    """Health, relays (with heartbeat age, circuit and publish rate) and the last 15 minutes of samples."""
    stats = conn.execute(queries.OUTBOX_STATS).fetchone() or {}
    relays = conn.execute(console_queries.RELAYS, state.relay_params).fetchall()
    health = summarize(stats, [r for r in relays if r["live"]], state.settings.relay.degraded_after_seconds)
    for relay in relays:
        relay["publish_rate"] = round(state.rates.rate(str(relay["relay_id"])), 2) if relay["live"] else 0.0
    return {
        **health,
        "relays": relays,
        "series": [p.as_dict() for p in state.series.points()],
        "window_seconds": state.series.window_seconds,
        "sample_seconds": state.sample_seconds,
        "sampler_error": state.database_error,
        "local_stack": bool(state.settings.fault_url),
        "dlq_configured": bool(state.settings.sqs_dlq_url),
    }


@router.get("/api/outbox")
def outbox(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    """Events that failed and wait for a retry, wait behind a dead letter, or are older than a minute."""
    return ops.outbox_list(conn, stuck=True, limit=max(1, min(limit, 1000)))


@router.post("/api/outbox/{event_id}/retry", dependencies=[Csrf])
def outbox_retry(body: Action, conn: Conn, event_id: int = EventId) -> dict[str, Any]:
    return {"due_now": ops.outbox_retry(conn, event_id)}


@router.get("/api/dead-letters")
def dead_letters(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    return ops.dead_letters_list(conn, max(1, min(limit, 1000)))


@router.get("/api/dead-letters/{event_id}")
def dead_letter(conn: Conn, event_id: int = EventId) -> dict[str, Any]:
    return ops.dead_letter_show(conn, event_id)


@router.post("/api/dead-letters/{event_id}/retry", dependencies=[Csrf])
def dead_letter_retry(body: Action, conn: Conn, event_id: int = EventId) -> dict[str, Any]:
    return {"requeued": ops.dead_letters_retry(conn, event_id)}


@router.post("/api/dead-letters/{event_id}/discard", dependencies=[Csrf])
def dead_letter_discard(body: Action, conn: Conn, event_id: int = EventId) -> dict[str, Any]:
    ops.dead_letter_discard(conn, event_id)
    return {"discarded": event_id}


@router.get("/api/dlq")
def dlq(state: State, limit: int = 50) -> dict[str, Any]:
    """The payment side's SQS dead-letter queue (its messages stay there)."""
    if not state.settings.sqs_dlq_url:
        return {"configured": False, "messages": []}
    return {"configured": True, "messages": sqs_admin.dlq_list(state.settings, max(1, min(limit, 500)))}


@router.post("/api/dlq/redrive", dependencies=[Csrf])
def dlq_redrive(body: Action, state: State) -> dict[str, Any]:
    return {"redriven": sqs_admin.dlq_redrive(state.settings)}


@router.get("/api/fault")
def fault_mode(state: State) -> dict[str, Any]:
    """The local stack's SQS fault switch (absent on real infrastructure)."""
    if not state.settings.fault_url:
        return {"available": False, "mode": None}
    return {"available": True, "mode": fault.get_mode(state.settings.fault_url)}


@router.post("/api/fault", dependencies=[Csrf])
def fault_set(body: FaultSwitch, state: State) -> dict[str, Any]:
    if not state.settings.fault_url:
        raise ConfigurationError("the fault switch exists only on the local stack started by `txoutbox up`")
    return {"available": True, "mode": fault.set_mode(state.settings.fault_url, body.mode)}
