"""The booking service's commands, added to `txoutbox` through the entry-point group `txoutbox.cli`:
`txoutbox api` serves the API, `txoutbox flights list` shows the booked flights."""

from __future__ import annotations

import sys
from typing import Any

import click

from txoutbox.cli.common import check_database, check_port, connect, json_option, limit_option, load_settings
from txoutbox.cli.output import print_rows


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 in containers)."
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--migrate", is_flag=True, help="Apply pending migrations before serving.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
def api(host: str, port: int, migrate: bool, workers: int) -> None:
    """Serve the booking API (FastAPI)."""
    import uvicorn

    from flights.settings import ApiSettings
    from txoutbox import logs
    from txoutbox.migrate import apply_migrations

    logs.configure()
    settings = load_settings()
    ApiSettings.from_env()  # refuse a bad API setting here, in one sentence, not in each worker
    check_database(settings)
    if migrate:
        done = apply_migrations(settings.database_url)
        click.echo("\n".join(f"applied {m.label}" for m in done) or "schema up to date")
    check_port(host, port, "the API")
    click.echo(
        f"booking API on http://{host}:{port} (Swagger UI: http://{host}:{port}/swagger-ui/index.html)"
    )
    config: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "server_header": False,
        "log_config": None,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:
        from flights.workers import Workers

        sys.exit(Workers(config, workers).run())
    else:
        from flights.app import create_app

        uvicorn.run(create_app(settings), **config)


@click.group()
def flights() -> None:
    """The booking service's flights."""


@flights.command("list")
@json_option
@limit_option
def flights_list(as_json: bool, limit: int) -> None:
    """List booked flights."""
    from flights.queries import list_for_operator

    with connect() as conn:
        rows = list_for_operator(conn, limit)
    print_rows(rows, as_json=as_json, empty="no flights booked yet")
