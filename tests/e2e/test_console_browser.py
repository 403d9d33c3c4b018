"""The operator console as a person sees it: headless Chromium (Debian's) against `txoutbox up`.

Screenshots of the main views go to the test's temporary folder; with UPDATE_CONSOLE_SCREENSHOTS=1 they
replace docs/img/console-*.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack.sqs import free_port
from tests.e2e.conftest import Stack
from tests.helpers import poll
from txoutbox import Event, add_event

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing in CI: `make test` installs Debian's chromium as root")
        pytest.skip("Debian's chromium is not installed (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console(stack: Stack) -> str:
    """A running `txoutbox up` with its operator console on a free port; the console's URL."""
    stack.start("--console-port", str(free_port()))
    url = str(json.loads((stack.home / "stack.json").read_text())["console_url"])
    assert poll(lambda: _answers(url), 30), stack.output()
    started = stack.wait_for_line(f"console on {url}", 5)
    assert started and started.startswith("console"), stack.output()
    return url


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/overview", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("UPDATE_CONSOLE_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / name), full_page=True)


def _confirm(page: Any, expected: str) -> None:
    dialog = page.locator("dialog#confirm")
    dialog.wait_for(state="visible")
    assert expected in dialog.inner_text()
    page.click("#confirm-ok")
    dialog.wait_for(state="hidden")


def test_console_charts_dead_letter_retry_and_fault_switch(
    stack: Stack, console: str, client: httpx.Client, browser: Any, tmp_path: Path
) -> None:
    url = console
    assert stack.proc is not None and stack.proc.poll() is None, "`up` stopped:\n" + stack.output()
    database_url = stack.stack_file()["database_url"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on(
        "request",
        lambda req: None if req.url.startswith((url, "data:")) else problems.append(f"fetched {req.url}"),
    )
    page.goto(url)

    # The charts render and fill as samples come in.
    for n in range(1, 6):
        stack.book(client, day=n)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].every(f => Number(f.dataset.points) >= 3)",
        timeout=20_000,
    )
    assert page.locator(".chart svg path.line").count() == 3
    page.wait_for_function(
        "() => document.querySelector('#relays tr[data-circuit=\"closed\"]') !== null", timeout=15_000
    )
    assert page.inner_text("#status") == "ok"

    # An event over SQS's 256 KiB limit becomes a dead letter, with its reason, on the page.
    with psycopg.connect(database_url) as conn:
        add_event(conn, Event("Flight", "oversized", "FlightBooked", {"pad": "x" * 300_000}))
    row = page.locator("#dead-letters tr[data-dead-letter]")
    row.wait_for(timeout=15_000)
    assert "over the queue's limit" in row.inner_text() and "oversized" in row.inner_text()
    row.locator("button[data-action=payload]").click()
    page.locator("dialog#payload").wait_for(state="visible")
    assert '"pad": "xxxx' in page.inner_text("#payload-text")
    _shot(page, tmp_path, "console-dead-letter-payload.png")
    page.click("#payload-close")

    # Retry (confirmed) puts it back into the outbox: the relay takes it again, and, still too big,
    # dead-letters it a second time.
    dead_id = int(row.get_attribute("data-dead-letter") or 0)
    before = _dead_lettered_at(database_url, dead_id)
    row.locator("button[data-action=retry]").click()
    page.locator("dialog#confirm").wait_for(state="visible")
    _shot(page, tmp_path, "console-confirm-retry.png")
    _confirm(page, "back into the outbox")
    page.wait_for_function(
        "() => document.querySelector('#toast').textContent.includes('back in the outbox')", timeout=5_000
    )
    assert poll(lambda: (_dead_lettered_at(database_url, dead_id) or before) > before, 15), stack.output()
    dead_lettered = [line for line in stack.lines if "dead-lettered" in line and "oversized" in line]
    assert len(dead_lettered) == 2, dead_lettered

    # Discard (confirmed): gone for good.
    row = page.locator(f"#dead-letters tr[data-dead-letter='{dead_id}']")
    row.locator("button[data-action=discard]").click()
    _confirm(page, "never be published")
    page.wait_for_function("() => document.querySelector('#dead-letters tr[data-dead-letter]') === null")

    # The fault switch (confirmed) denies SQS: the next booking opens the circuit, and the page shows it.
    page.click("button[data-fault=deny]")
    _confirm(page, "AccessDenied")
    page.wait_for_function(
        "() => document.querySelector('#fault-mode').textContent === 'deny'", timeout=5_000
    )
    for n in range(6, 9):
        stack.book(client, day=n)
    page.wait_for_function(
        "() => document.querySelector('#relays tr[data-circuit=\"open\"]') !== null", timeout=20_000
    )
    relay = page.inner_text("#relays tbody")
    assert "open" in relay and "AccessDenied" in relay, relay
    assert page.inner_text("#status") == "degraded"
    page.wait_for_function(
        "() => document.querySelector('#chart-backlog .value').textContent.startsWith('3 ')"
    )
    _shot(page, tmp_path, "console-circuit-open.png")

    page.click("button[data-fault=allow]")
    _confirm(page, "back to normal")
    page.wait_for_function(
        "() => document.querySelector('#relays tr[data-circuit=\"closed\"]') !== null", timeout=20_000
    )
    page.wait_for_function(
        "() => document.querySelector('#chart-backlog .value').textContent.startsWith('0 ')", timeout=20_000
    )
    _shot(page, tmp_path, "console-overview.png")
    assert problems == [], problems
    page.close()


def _dead_lettered_at(database_url: str, event_id: int) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT dead_lettered_at FROM txoutbox.dead_letters WHERE id = %s", (event_id,)
        ).fetchone()
    return row[0] if row else None
