"""The `txoutbox` command. Every error a user can cause ends here as one sentence and exit status 1."""

from __future__ import annotations

import os
import sys

import click
import psycopg

from txoutbox.cli.common import check_database, json_option, limit_option
from txoutbox.cli.common import connect as _connect
from txoutbox.cli.common import load_settings as _settings
from txoutbox.cli.output import print_record, print_rows, to_json
from txoutbox.cli.plugins import PluginGroup
from txoutbox.errors import TxOutboxError
from txoutbox.redact import redact


@click.group(
    cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(package_name="txoutbox")
def cli() -> None:
    """txoutbox: a transactional outbox for PostgreSQL and SQS, with its flight-booking reference system.

    With no configuration, commands use the local stack that `txoutbox up` runs. DATABASE_URL,
    SQS_QUEUE_URL, SQS_ENDPOINT_URL and AWS_REGION point them at real infrastructure. Applications add
    their own commands (entry-point group `txoutbox.cli`), e.g. `api`, `flights` and `payments`.
    """


# -- running the system ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--null-publisher", is_flag=True, hidden=True, help="Benchmarks: accept everything, send nothing."
)
def relay(null_publisher: bool) -> None:
    """Publish outbox events to SQS (any number of relays can run side by side)."""
    from txoutbox import logs
    from txoutbox.metrics import RelayMetrics
    from txoutbox.publishers import Publisher
    from txoutbox.publishers.null import NullPublisher
    from txoutbox.publishers.sqs import SqsPublisher
    from txoutbox.relay import Relay
    from txoutbox.service import run_until_signalled

    logs.configure()
    settings = _settings(need_sqs=not null_publisher)
    check_database(settings)
    rs = settings.relay
    publisher: Publisher
    if null_publisher:
        publisher = NullPublisher()
    else:
        assert settings.sqs_queue_url is not None
        publisher = SqsPublisher(
            settings.sqs_queue_url,
            region=settings.aws_region,
            endpoint_url=settings.sqs_endpoint_url,
            local_credentials=settings.local_stack,
            max_message_bytes=rs.max_message_bytes,
            max_connections=rs.max_in_flight,
        )
    metrics = RelayMetrics()
    if rs.metrics_port:
        metrics.serve(rs.metrics_port, os.environ.get("TXOUTBOX_METRICS_HOST", "127.0.0.1"))
    run_until_signalled(Relay(settings, publisher, metrics=metrics).run)


@cli.command()
@click.option(
    "--component", "components", multiple=True, help="Only these (txoutbox and the installed applications)."
)
@click.option("--dry-run", is_flag=True, help="List pending migrations, apply nothing.")
@click.option(
    "--lock-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait for another process's migration run before giving up.",
)
def migrate(components: tuple[str, ...], dry_run: bool, lock_timeout: float) -> None:
    """Apply pending SQL migrations (safe to run from several processes at once)."""
    from txoutbox.migrate import apply_migrations, pending, resolve_components

    settings = _settings()
    chosen = resolve_components(list(components))
    if dry_run:
        todo = pending(settings.database_url, chosen)
        click.echo("\n".join(f"pending: {m.label}" for m in todo) or "nothing to apply")
        return
    done = apply_migrations(settings.database_url, chosen, lock_timeout=lock_timeout)
    click.echo("\n".join(f"applied {m.label}" for m in done) or "schema up to date")


# -- looking at the system --------------------------------------------------------------------------


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Backlog, age of the oldest waiting event, dead letters and the relays' circuit state."""
    from txoutbox.health import read_health_sync

    settings = _settings()
    with _connect() as conn:
        health = read_health_sync(conn, settings)
    if as_json:
        click.echo(to_json(health))
        return
    outbox = health["outbox"]
    click.echo(f"status        {health['status']}")
    click.echo(f"backlog       {outbox['backlog']} events waiting")
    click.echo(f"oldest        {outbox['oldest_age_seconds']:.1f} s")
    click.echo(f"dead letters  {outbox['dead_letters']}")
    click.echo(f"circuit       {outbox['circuit']} ({outbox['relays']} relay(s) reporting)")


@cli.group()
def outbox() -> None:
    """Events waiting to be published."""


@outbox.command("list")
@click.option("--stuck", is_flag=True, help="Only events that failed, wait behind a dead letter, or are old.")
@click.option(
    "--stuck-after", default=60.0, show_default=True, help="Seconds after which a waiting event is stuck."
)
@json_option
@limit_option
def outbox_list(stuck: bool, stuck_after: float, as_json: bool, limit: int) -> None:
    """List waiting events with their attempts, last error and state."""
    from txoutbox import ops

    with _connect() as conn:
        rows = ops.outbox_list(conn, stuck=stuck, stuck_after_seconds=stuck_after, limit=limit)
    print_rows(
        rows,
        as_json=as_json,
        empty="the outbox is empty: every event has been published" if not stuck else "no stuck events",
        columns=(
            "id",
            "aggregate_type",
            "aggregate_id",
            "event_type",
            "created_at",
            "attempts",
            "next_attempt_at",
            "state",
            "last_error",
        ),
    )


@outbox.command("retry")
@click.argument("event_id", required=False, type=int)
@click.option("--all", "all_", is_flag=True, help="Every event waiting for a retry.")
@json_option
def outbox_retry(event_id: int | None, all_: bool, as_json: bool) -> None:
    """Make a backing-off event (or --all) due now."""
    from txoutbox import ops

    if (event_id is None) == (not all_):
        raise click.UsageError("give an event id or --all")
    with _connect() as conn:
        ids = ops.outbox_retry(conn, None if all_ else event_id)
    if as_json:
        click.echo(to_json({"due_now": ids}))
    elif event_id is not None and not ids:
        click.echo(f"event {event_id} is already due; the relay will publish it")
    else:
        click.echo(f"{len(ids)} event(s) due now: {', '.join(map(str, ids)) or '-'}")


@cli.group("dead-letters")
def dead_letters() -> None:
    """Events the broker refused for good, or that ran out of attempts."""


@dead_letters.command("list")
@json_option
@limit_option
def dead_letters_list(as_json: bool, limit: int) -> None:
    """List dead letters with their reasons."""
    from txoutbox import ops

    with _connect() as conn:
        rows = ops.dead_letters_list(conn, limit)
    print_rows(
        rows,
        as_json=as_json,
        empty="no dead letters",
        columns=(
            "id",
            "aggregate_type",
            "aggregate_id",
            "event_type",
            "attempts",
            "payload_bytes",
            "dead_lettered_at",
            "reason",
        ),
    )


@dead_letters.command("show")
@click.argument("event_id", type=int)
@json_option
def dead_letters_show(event_id: int, as_json: bool) -> None:
    """Show one dead letter, payload included."""
    from txoutbox import ops

    with _connect() as conn:
        print_record(ops.dead_letter_show(conn, event_id), as_json=as_json)


@dead_letters.command("retry")
@click.argument("event_id", required=False, type=int)
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@json_option
def dead_letters_retry(event_id: int | None, all_: bool, as_json: bool) -> None:
    """Put a dead letter (or --all) back into the outbox, first in its aggregate's order."""
    from txoutbox import ops

    if (event_id is None) == (not all_):
        raise click.UsageError("give a dead letter id or --all")
    with _connect() as conn:
        ids = ops.dead_letters_retry(conn, None if all_ else event_id)
    if as_json:
        click.echo(to_json({"requeued": ids}))
    else:
        click.echo(f"{len(ids)} dead letter(s) back in the outbox: {', '.join(map(str, ids)) or '-'}")


@dead_letters.command("discard")
@click.argument("event_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def dead_letters_discard(event_id: int, yes: bool, as_json: bool) -> None:
    """Delete a dead letter for good; the later events of its aggregate flow on."""
    from txoutbox import ops

    with _connect() as conn:
        row = ops.dead_letter_show(conn, event_id)
        if not yes:
            click.confirm(
                f"Discard event {event_id} ({row['event_type']} of {row['aggregate_type']} "
                f"{row['aggregate_id']})"
                " for good? It will never be published",
                abort=True,
            )
        ops.dead_letter_discard(conn, event_id)
    if as_json:
        click.echo(to_json({"discarded": event_id}))
    else:
        click.echo(f"dead letter {event_id} discarded; later events of {row['aggregate_id']} flow on")


@cli.group()
def dlq() -> None:
    """The payment side's SQS dead-letter queue (flightDLQ.fifo)."""


@dlq.command("list")
@json_option
@limit_option
def dlq_list(as_json: bool, limit: int) -> None:
    """List the messages in the SQS dead-letter queue (they stay there)."""
    from txoutbox import sqs_admin

    rows = sqs_admin.dlq_list(_settings(), limit)
    print_rows(
        rows,
        as_json=as_json,
        empty="the dead-letter queue is empty",
        columns=("message_id", "group_id", "event_id", "event_type", "receive_count", "body"),
    )


@dlq.command("redrive")
@json_option
def dlq_redrive(as_json: bool) -> None:
    """Move every DLQ message back to the main queue (still paid at most once)."""
    from txoutbox import sqs_admin

    moved = sqs_admin.dlq_redrive(_settings(need_sqs=True))
    click.echo(to_json({"redriven": moved}) if as_json else f"{moved} message(s) moved back to the queue")


def main() -> None:
    """Console entry point: translate every failure into one line on stderr and a non-zero exit.

    Every message goes through `redact`: a connection string in an error never shows its password.
    """
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one sentence, never a traceback or a secret
        if os.environ.get("TXOUTBOX_DEBUG") and not isinstance(exc, TxOutboxError | psycopg.Error):
            raise  # a bug: the developer asked for the traceback
        click.echo(f"error: {redact(_describe(exc))}", err=True)
        sys.exit(1)


def _describe(exc: Exception) -> str:
    if isinstance(exc, TxOutboxError):
        return str(exc)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return f"the database is not migrated ({exc.diag.message_primary}): run `txoutbox migrate`"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database: {first}"
    if isinstance(exc, psycopg.Error):
        return f"the database refused the command: {first}"
    return f"unexpected {type(exc).__name__}: {first} (TXOUTBOX_DEBUG=1 shows the traceback)"
