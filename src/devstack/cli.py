"""The local stack's commands, added to `txoutbox` through the entry-point group `txoutbox.cli`:
`txoutbox up` and `txoutbox fault sqs deny|allow|down|up`."""

from __future__ import annotations

import click

from txoutbox.cli.common import load_settings
from txoutbox.errors import ConfigurationError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the booking API.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port of the API."
)
@click.option(
    "--sqs-port",
    default=9324,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the local SQS (fauxqs) on 127.0.0.1.",
)
@click.option("--relays", default=1, show_default=True, type=click.IntRange(0, 16), help="Relay processes.")
@click.option(
    "--payments",
    default=1,
    show_default=True,
    type=click.IntRange(0, 16),
    help="Payment service processes (0: none; published events wait in the queue).",
)
@click.option(
    "--metrics-port",
    default=9464,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Prometheus metrics of the first relay on 127.0.0.1 (0: off).",
)
@click.option(
    "--console-port",
    default=8081,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Operator console on 127.0.0.1 (0: off).",
)
def up(
    host: str, port: int, sqs_port: int, relays: int, payments: int, metrics_port: int, console_port: int
) -> None:
    """Start the whole system locally: PostgreSQL, SQS, migrations, API, relay, payments and console.

    PostgreSQL and the SQS keep their data in $TXOUTBOX_HOME (default .txoutbox/): a stop, a crash or a
    kill loses no booking, event or message; the next `up` carries on.
    """
    from devstack.up import StackOptions, run_stack

    options = StackOptions(
        host=host,
        port=port,
        sqs_port=sqs_port,
        relays=relays,
        payments=payments,
        metrics_port=metrics_port,
        console_port=console_port,
    )
    status = run_stack(options)
    if status:
        raise SystemExit(status)


@click.group()
def fault() -> None:
    """Inject failures into the local stack (to replay the walkthrough's failure path)."""


@fault.command("sqs")
@click.argument("mode", type=click.Choice(["deny", "allow", "down", "up"]))
def fault_sqs(mode: str) -> None:
    """deny: SQS answers AccessDenied; allow: normal; down: SQS does not answer; up: same as allow."""
    from devstack.sqs import set_fault

    settings = load_settings()
    if not settings.fault_url:
        raise ConfigurationError(
            "fault injection works only on the local stack started by `txoutbox up`; SQS_QUEUE_URL points at "
            "real SQS, so nothing was changed (on AWS, deny sqs:SendMessage on the relay's task role instead)"
        )
    now = set_fault(settings.fault_url, "allow" if mode == "up" else mode)
    click.echo(
        {
            "deny": "local SQS now answers AccessDenied to every call (as AWS does when the role is denied)",
            "down": "local SQS now drops every connection without answering",
            "allow": "local SQS is back to normal",
        }[now]
    )
