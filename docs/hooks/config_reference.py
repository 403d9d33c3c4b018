"""MkDocs hook: the configuration reference, generated from the code so it cannot drift.

`docs/configuration.md` holds the marker `<!-- config-reference -->`; this hook replaces it with tables built
from `txoutbox.config` (every `RelaySettings` field declares its environment variable, default, accepted range
and doc; `LOCATION_SETTINGS` the database and queue addresses), from the database timeouts of
`txoutbox.connections`, and from `OTHER_VARIABLES` below, the variables read elsewhere.
`tests/unit/test_docs.py` checks that the tables name every environment variable the code reads, and nothing
the code no longer reads.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

MARKER = "<!-- config-reference -->"

# Variables read outside txoutbox.config: (name, read by, meaning, default).
OTHER_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    ("LOG_FORMAT", "txoutbox.logs", "`json` for JSON lines (CloudWatch), else readable text", "text"),
    ("LOG_LEVEL", "txoutbox.logs", "log level of the commands", "`INFO`"),
    ("TXOUTBOX_METRICS_HOST", "txoutbox relay", "address the relay's metrics bind to", "`127.0.0.1`"),
    ("TXOUTBOX_DEBUG", "txoutbox (CLI)", "set: an unexpected error prints its traceback", "unset"),
    (
        "TXOUTBOX_CONSOLE_TOKEN",
        "txoutbox console",
        "the console's password (HTTP Basic), required when it binds beyond loopback",
        "unset",
    ),
    (
        "TXOUTBOX_TEST_DATABASE_URL",
        "txoutbox.testing",
        "PostgreSQL server for the test kit's throwaway databases (else `DATABASE_URL`)",
        "unset",
    ),
    (
        "TXOUTBOX_HEALTH_DETAIL",
        "flights (booking API)",
        "who sees the reasons of a degraded `/health`: `loopback`, `always` or `never`",
        "`loopback`",
    ),
    ("TXOUTBOX_NODE_MODULES", "devstack", "where to look for `node_modules` (fauxqs)", "the project's"),
    ("XDG_RUNTIME_DIR", "devstack", "where the local PostgreSQL keeps its lock file", "`/tmp`"),
)


def _other_variables() -> tuple[tuple[str, str, str, str], ...]:
    """OTHER_VARIABLES and the database timeouts of `txoutbox.connections` (defaults from its dataclass)."""
    from txoutbox.connections import DbTimeouts

    d = DbTimeouts()
    bound = "; 0: no bound"
    return (
        *OTHER_VARIABLES,
        (
            "TXOUTBOX_DB_CONNECT_TIMEOUT",
            "txoutbox.connections",
            "seconds to wait for a connection" + bound,
            f"{d.connect_seconds:g}",
        ),
        (
            "TXOUTBOX_DB_STATEMENT_TIMEOUT",
            "txoutbox.connections",
            "seconds any one statement may run on txoutbox's connections" + bound,
            f"{d.statement_seconds:g}",
        ),
        (
            "TXOUTBOX_DB_LOCK_TIMEOUT",
            "txoutbox.connections",
            "seconds a statement may wait for a lock" + bound,
            f"{d.lock_seconds:g}",
        ),
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: Any, documented: str) -> str:
    if documented:
        return documented
    if value is MISSING or value is None:
        return "unset"
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value:,g}" if isinstance(value, float) else f"{value:,}"


def reference_markdown() -> str:
    """The reference's tables, in Markdown."""
    from txoutbox.config import LOCATION_SETTINGS, RelaySettings

    lines = [
        "### Where the database and the queue are",
        "",
        "| Variable | Meaning | Default |",
        "|---|---|---|",
    ]
    for s in LOCATION_SETTINGS:
        lines.append(f"| `{s.name}` | {_cell(s.doc)} | {_cell(s.default_doc)} |")
    lines += [
        "",
        "### Relay, health and alerts (`RelaySettings`)",
        "",
        "| Variable | Meaning | Default | Accepted |",
        "|---|---|---|---|",
    ]
    for f in fields(RelaySettings):
        s = f.metadata["env"]
        default = _default(f.default, s.default_doc)
        lines.append(f"| `{s.name}` | {_cell(s.doc)} | {_cell(default)} | {_cell(s.accepted)} |")
    lines += [
        "",
        "### Read elsewhere",
        "",
        "| Variable | Read by | Meaning | Default |",
        "|---|---|---|---|",
    ]
    for name, reader, meaning, default in _other_variables():
        lines.append(f"| `{name}` | {reader} | {_cell(meaning)} | {_cell(default)} |")
    return "\n".join(lines) + "\n"


def documented_names() -> set[str]:
    """Every variable the reference lists."""
    from txoutbox.config import LOCATION_SETTINGS, RelaySettings

    return (
        {s.name for s in LOCATION_SETTINGS}
        | {f.metadata["env"].name for f in fields(RelaySettings)}
        | {name for name, *_ in _other_variables()}
    )


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown())
