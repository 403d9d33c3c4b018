"""The payment service's commands, added to `txoutbox` through the entry-point group `txoutbox.cli`:
`txoutbox payments` runs the consumer, `txoutbox payments list` shows the payments made."""

from __future__ import annotations

import click

from txoutbox.cli.common import check_database, connect, json_option, limit_option, load_settings
from txoutbox.cli.output import print_rows


@click.group(invoke_without_command=True)
@click.option(
    "--concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Long-polling receivers."
)
@click.pass_context
def payments(ctx: click.Context, concurrency: int) -> None:
    """Run the payment service (consumer); `payments list` shows the payments."""
    if ctx.invoked_subcommand is not None:
        return
    from payments.service import consumer
    from txoutbox import logs
    from txoutbox.service import run_until_signalled

    logs.configure()
    settings = load_settings(need_sqs=True)
    check_database(settings)
    run_until_signalled(consumer(settings, concurrency=concurrency).run)


@payments.command("list")
@json_option
@limit_option
def payments_list(as_json: bool, limit: int) -> None:
    """List the payments made."""
    from payments.queries import list_payments

    with connect() as conn:
        rows = list_payments(conn, limit)
    print_rows(rows, as_json=as_json, empty="no payments yet")
