"""`txoutbox console`: serve the operator console (registered in the `txoutbox.cli` entry-point group)."""

from __future__ import annotations

import os

import click

from txoutbox.console.security import TOKEN_ENV, is_loopback

DEFAULT_PORT = 8081


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
def console(host: str, port: int) -> None:
    """Serve the operator console: backlog charts, relays, retries, dead letters, DLQ, fault switch.

    Bound beyond loopback it requires a token in TXOUTBOX_CONSOLE_TOKEN (the browser asks for it as password).
    """
    import uvicorn

    from txoutbox import logs
    from txoutbox.cli.common import check_port, load_settings
    from txoutbox.console.app import create_app

    token = os.environ.get(TOKEN_ENV) or None
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise click.ClickException(
            f"refusing to serve the console on {host} (beyond loopback) without a token: set {TOKEN_ENV}"
        )
    logs.configure()
    settings = load_settings()
    check_port(host, port, "the console")
    app = create_app(settings, port=port, loopback=loopback, access_token=token)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"console on http://{shown}:{port}" + (" (token required)" if token else ""))
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
