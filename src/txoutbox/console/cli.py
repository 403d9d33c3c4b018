"""`txoutbox console`: serve the operator console (registered in the `txoutbox.cli` entry-point group)."""

from __future__ import annotations

import os
import socket

import click

from txoutbox.console.security import TOKEN_ENV, is_loopback

DEFAULT_PORT = 8081


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve the console on {host}:{port} ({exc.strerror}): choose another --port"
            ) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
def console(host: str, port: int) -> None:
    """Serve the operator console: backlog charts, relays, retries, dead letters, DLQ, fault switch.

    Bound beyond loopback it requires a token in TXOUTBOX_CONSOLE_TOKEN (the browser asks for it as password).
    """
    import uvicorn

    from txoutbox import logs
    from txoutbox.config import Settings
    from txoutbox.console.app import create_app

    token = os.environ.get(TOKEN_ENV) or None
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise click.ClickException(
            f"refusing to serve the console on {host} (beyond loopback) without a token: set {TOKEN_ENV}"
        )
    logs.configure()
    settings = Settings.from_env()
    _check_port(host, port)
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
