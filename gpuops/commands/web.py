"""`gpuops api` and `gpuops demo`."""

from __future__ import annotations

import logging

import click
import uvicorn

from gpuops.commands.context import container_from, settings_from
from gpuops.store import migrate
from gpuops.web.app import create_app

log = logging.getLogger(__name__)


def serve(ctx: click.Context, host: str, port: int) -> None:
    container = container_from(ctx)
    if not migrate.is_up_to_date(container.settings.database_url):
        raise click.ClickException("the database schema is not at the current revision; run `gpuops db upgrade`")
    app = create_app(container)
    log.info("serving the dashboard and API", extra={"url": f"http://{host}:{port}/"})
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@click.command("api")
@click.option("--host", default=None, help="Address to bind (default GPUOPS_API_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default GPUOPS_API_PORT or 8080).")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard, the JSON API, /healthz and /metrics."""
    settings = settings_from(ctx)
    serve(ctx, host or settings.api_host, settings.api_port if port is None else port)


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def demo(ctx: click.Context, host: str, port: int) -> None:
    """Run gpuops on embedded defaults and serve the dashboard until interrupted."""
    settings = settings_from(ctx)
    migrate.upgrade(settings.database_url)
    click.echo(f"gpuops demo: dashboard at http://{host}:{port}/  (Ctrl-C to stop)")
    serve(ctx, host, port)


def register(group: click.Group) -> None:
    group.add_command(api)
    group.add_command(demo)
