"""Serving the dashboard and API, for `gpuops api` and the embedded daemon."""

from __future__ import annotations

import logging

import click
import uvicorn

from entrypoints.commands.context import container_from
from entrypoints.web.app import create_app
from gpuops.pipeline import Pipeline
from gpuops.store import migrate

log = logging.getLogger(__name__)


def serve(ctx: click.Context, host: str, port: int, *, pipeline: Pipeline | None = None) -> None:
    """Serve the web app; decisions go through `pipeline` (the embedded daemon's), else the API's own."""
    container = container_from(ctx)
    if not migrate.is_up_to_date(container.settings.database_url):
        raise click.ClickException("the database schema is not at the current revision; run `gpuops db upgrade`")
    app = create_app(container, pipeline=pipeline)
    log.info("serving the dashboard and API", extra={"url": f"http://{host}:{port}/"})
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
