"""`txoutbox published list`, `txoutbox replay` and `txoutbox retention`: the archive of published events.

Registered in the entry-point group `txoutbox.cli` (see txoutbox.cli.plugins). The archive fills only with
retention on (`TXOUTBOX_RETENTION_DAYS`, see txoutbox.retention).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.termui import progressbar

from txoutbox.cli.common import connect, json_option, limit_option, load_settings
from txoutbox.cli.output import print_rows, to_json
from txoutbox.errors import ConfigurationError
from txoutbox.replay import Selection

F = TypeVar("F", bound=Callable[..., Any])


class Instant(click.ParamType[dt.datetime, Any]):
    """An ISO-8601 date or date-time; without a zone it is UTC."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or date-time (e.g. 2026-11-25T10:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def selection_options(command: F) -> F:
    """The filters `published list` and `replay` share."""
    for option in reversed(
        [
            click.option("--aggregate-type", help="Only events of this aggregate type (e.g. Flight)."),
            click.option("--aggregate", "aggregate_id", help="Only events of this aggregate id."),
            click.option("--type", "event_type", help="Only events of this type (e.g. FlightBooked)."),
            click.option("--since", type=Instant(), help="Only events written at or after this time."),
            click.option("--until", type=Instant(), help="Only events written before this time."),
        ]
    ):
        command = option(command)
    return command


def _selection(**filters: Any) -> Selection:
    since, until = filters.get("since"), filters.get("until")
    if since and until and since >= until:
        raise click.UsageError("--since must be before --until")
    return Selection(**filters)


COLUMNS = ("id", "event_id", "aggregate_type", "aggregate_id", "event_type", "created_at", "published_at")


@click.group()
def published() -> None:
    """Published events kept for TXOUTBOX_RETENTION_DAYS (the archive that `replay` reads)."""


@published.command("list")
@selection_options
@json_option
@limit_option
def published_list(as_json: bool, limit: int, **filters: Any) -> None:
    """List archived events, oldest first."""
    from txoutbox.replay import list_published

    with connect() as conn:
        rows = list_published(conn, _selection(**filters), limit)
    print_rows(rows, as_json=as_json, empty="no published events match (is retention on?)", columns=COLUMNS)


@click.command()
@click.option("--queue-url", required=True, help="The SQS FIFO queue to publish to.")
@selection_options
@click.option("--dry-run", is_flag=True, help="List what would be sent; send nothing.")
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=None, help="At most this many messages per second."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def replay(
    queue_url: str, dry_run: bool, rate: float | None, yes: bool, as_json: bool, **filters: Any
) -> None:
    """Publish archived events again, in their original order per aggregate, marked `txoutbox-replay=1`."""
    from txoutbox.publishers.sqs import SqsPublisher
    from txoutbox.replay import count_published, list_published
    from txoutbox.replay import replay as run_replay

    if not queue_url.endswith(".fifo"):
        raise click.UsageError("--queue-url must be a FIFO queue (its name ends in .fifo): order needs one")
    selection = _selection(**filters)
    settings = load_settings()
    with connect() as conn:
        total = count_published(conn, selection)
        if dry_run:
            rows = list_published(conn, selection, max(total, 1))
    if dry_run:
        if as_json:
            click.echo(to_json({"queue_url": queue_url, "would_send": total, "events": rows}))
            return
        print_rows(rows, as_json=False, empty="no published events match", columns=COLUMNS)
        click.echo(f"dry run: {total} event(s) would be replayed to {queue_url}")
        return
    if total == 0:
        click.echo(to_json({"sent": 0}) if as_json else "no published events match: nothing to replay")
        return
    if not yes:
        click.confirm(f"replay {total} event(s) to {queue_url}?", abort=True, err=True)
    rs = settings.relay
    publisher = SqsPublisher(
        queue_url,
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        local_credentials=settings.local_stack,
        max_message_bytes=rs.max_message_bytes,
    )

    async def run(progress: Callable[[int], None]) -> Any:
        try:
            return await run_replay(
                settings.database_url,
                publisher,
                selection,
                message_format=rs.message_format,
                source=rs.event_source,
                rate=rate,
                progress=progress,
            )
        finally:
            await publisher.close()

    with progressbar(length=total, label="replaying", file=sys.stderr) as bar:
        result = asyncio.run(run(bar.update))
    if as_json:
        click.echo(to_json({"sent": result.sent, "run_id": result.run_id, "queue_url": queue_url}))
    else:
        click.echo(f"replayed {result.sent} event(s) to {queue_url} (run {result.run_id})")


@click.command()
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Keep this many days (default: TXOUTBOX_RETENTION_DAYS).",
)
@json_option
def retention(days: int | None, as_json: bool) -> None:
    """Create the archive's coming daily partitions and drop expired ones (relays also do it hourly)."""
    from txoutbox.retention import maintain

    days = days or load_settings().relay.retention_days
    if not days:
        raise ConfigurationError("retention is off: set TXOUTBOX_RETENTION_DAYS or pass --days")
    with connect() as conn:
        report = maintain(conn, days)
    if as_json:
        click.echo(
            to_json(
                {
                    "created": report.created,
                    "dropped": report.dropped,
                    "default_rows": report.default_rows,
                    "skipped": report.skipped,
                }
            )
        )
    elif report.skipped:
        click.echo("another maintainer (a relay) is at it right now: nothing done")
    else:
        click.echo(
            f"kept {days} day(s): created {', '.join(report.created) or 'nothing'}; "
            f"dropped {', '.join(report.dropped) or 'nothing'}"
        )
