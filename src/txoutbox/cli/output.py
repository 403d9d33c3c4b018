"""How commands print rows: a readable table, or with --json a JSON array of objects."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import click
import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def to_json(value: Any) -> str:
    return orjson.dumps(
        value, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    ).decode()


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    elif isinstance(value, float):
        text = f"{value:.1f}"
    elif isinstance(value, uuid.UUID):
        text = str(value)
    else:
        text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_rows(
    rows: Sequence[Mapping[str, Any]], *, as_json: bool, empty: str, columns: Sequence[str] = ()
) -> None:
    if as_json:
        click.echo(to_json(list(rows)))
        return
    if not rows:
        click.echo(empty)
        return
    names = list(columns) or list(rows[0].keys())
    cells = [[_cell(r.get(n)) for n in names] for r in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    click.echo("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for c in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def print_record(record: Mapping[str, Any], *, as_json: bool) -> None:
    if as_json:
        click.echo(to_json(dict(record)))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {_cell(value, 10_000)}")
