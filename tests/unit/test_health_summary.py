"""`txoutbox.health.summarize`: the outbox's health from its statistics and the live relays."""

from __future__ import annotations

from typing import Any

import pytest

from txoutbox.health import circuit_state, summarize

QUIET = {"backlog": 0, "oldest_age_seconds": 0.0, "retrying": 0, "dead_letters": 0}


def relay(state: str, reason: str | None = None) -> dict[str, Any]:
    return {"relay_id": f"r-{state}", "circuit_state": state, "circuit_reason": reason}


def test_empty_outbox_without_relays_is_ok_with_unknown_circuit() -> None:
    assert summarize(QUIET, [], 60) == {
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


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "unknown"),
        (["closed"], "closed"),
        (["closed", "half-open"], "half-open"),
        (["half-open", "open", "closed"], "open"),
        (["closed", "closed"], "closed"),
    ],
)
def test_circuit_is_the_worst_of_the_live_relays(states: list[str], expected: str) -> None:
    assert circuit_state([relay(s) for s in states]) == expected


def test_backlog_younger_than_the_threshold_is_ok() -> None:
    body = summarize(
        {**QUIET, "backlog": 40, "oldest_age_seconds": 59.9, "retrying": 3}, [relay("closed")], 60
    )
    assert body["status"] == "ok"
    assert body["outbox"] == {
        "backlog": 40,
        "oldest_age_seconds": 59.9,
        "retrying": 3,
        "dead_letters": 0,
        "circuit": "closed",
        "relays": 1,
    }


def test_oldest_event_past_the_threshold_is_degraded() -> None:
    body = summarize({**QUIET, "backlog": 1, "oldest_age_seconds": 61.25}, [relay("closed")], 60)
    assert body["status"] == "degraded"
    assert body["reasons"] == ["the oldest waiting event is 61.2 s old (threshold 60 s)"]


@pytest.mark.parametrize("state", ["open", "half-open"])
def test_open_or_probing_circuit_is_degraded(state: str) -> None:
    body = summarize(QUIET, [relay("closed"), relay(state, "AccessDenied: not authorized")], 60)
    assert body["status"] == "degraded"
    assert body["outbox"]["circuit"] == state
    assert body["reasons"] == [f"the relay's circuit is {state}: AccessDenied: not authorized"]


def test_dead_letters_are_degraded() -> None:
    body = summarize({**QUIET, "dead_letters": 2}, [], 60)
    assert body["status"] == "degraded"
    assert body["reasons"] == ["2 dead-lettered event(s) wait for an operator"]


def test_every_reason_is_listed() -> None:
    body = summarize({"backlog": 5, "oldest_age_seconds": 300, "dead_letters": 1}, [relay("open")], 60)
    assert len(body["reasons"]) == 3
    assert body["outbox"]["retrying"] == 0  # missing columns default to 0


def test_age_of_an_empty_outbox_is_zero() -> None:
    assert summarize({**QUIET, "oldest_age_seconds": 12.0}, [], 0)["outbox"]["oldest_age_seconds"] == 0.0
