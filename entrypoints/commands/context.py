"""What every command needs: settings (failing fast with the variable's name), logging, the container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gpuops.config import Settings, load_settings
from gpuops.errors import ConfigError
from gpuops.logs import configure_logging

if TYPE_CHECKING:
    from gpuops.wiring import Container


def settings_from(ctx: click.Context) -> Settings:
    """Load the settings once per invocation; a bad value becomes a clean non-zero exit."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            settings = load_settings()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        configure_logging(obj.get("log_format") or settings.log_format, obj.get("log_level") or settings.log_level)
        obj["settings"] = settings
    result: Settings = obj["settings"]
    return result


def container_from(ctx: click.Context) -> Container:
    obj = ctx.ensure_object(dict)
    if "container" not in obj:
        from gpuops.wiring import bootstrap  # the detectors' libraries load only for commands that need them

        container = bootstrap(settings_from(ctx))
        obj["container"] = container
        ctx.call_on_close(container.close)
    result: Container = obj["container"]
    return result


def store_container(ctx: click.Context) -> Container:
    """The container, for commands that read the store: a database that was never migrated (or lags behind)
    is a clean error that says what to run, not a traceback about a missing table."""
    from sqlalchemy.engine import make_url

    from gpuops.store import migrate

    url = settings_from(ctx).database_url
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") \
            and not database.startswith("file:") and not Path(database).exists():
        # Reading must not leave an empty database behind (SQLite creates the file on first connect).
        raise click.ClickException(f"there is no gpuops database at {Path(database).resolve()} (GPUOPS_DATABASE_URL="
                                   f"{url}); point GPUOPS_DATABASE_URL at the service's database, or create one "
                                   "with `gpuops db upgrade`")
    container = container_from(ctx)
    if not migrate.is_up_to_date(url):
        shown = make_url(url).render_as_string(hide_password=True)
        raise click.ClickException(f"the database at {shown} is not at the current schema revision; "
                                   "run `gpuops db upgrade`")
    return container


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
