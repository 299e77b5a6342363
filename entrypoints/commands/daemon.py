"""`gpuops daemon` (embedded: one process, no broker), `gpuops worker` and `gpuops beat` (distributed)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from entrypoints.commands.context import container_from, settings_from
from gpuops.config import Settings
from gpuops.errors import ConfigError
from gpuops.store import migrate

if TYPE_CHECKING:
    from entrypoints.worker.embedded import EmbeddedScheduler

log = logging.getLogger(__name__)


def _app(ctx: click.Context, wiring: str | None) -> object:
    from entrypoints.worker import create_app

    settings = settings_from(ctx)
    if wiring:
        settings = settings.model_copy(update={"worker_wiring": wiring})
    try:
        return create_app(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


_WIRING = click.option("--wiring", default=None, metavar="MODULE:FUNCTION",
                       help="Build the container with this function of Settings (default GPUOPS_WORKER_WIRING, "
                            "else the standard wiring).")


@click.command("daemon")
@click.option("--api/--no-api", default=True, show_default=True, help="Also serve the dashboard and API.")
@_WIRING
@click.pass_context
def daemon(ctx: click.Context, api: bool, wiring: str | None) -> None:
    """Embedded all-in-one: cycles, incidents, agent, execution and (optionally) the API in one process."""
    run_embedded(ctx, settings_from(ctx), api=api, wiring=wiring)


def run_embedded(ctx: click.Context, settings: Settings, *, api: bool, wiring: str | None = None,
                 clock: Callable[[], float] = time.time, rate: float = 1.0,
                 prepare: Callable[[EmbeddedScheduler], None] | None = None) -> None:
    """The embedded daemon on `settings`: the scheduler in a thread, the API in the foreground. `clock` and
    `rate` are the demo's simulated time (see EmbeddedScheduler); `prepare` sees the scheduler before it starts
    (the demo gives its pipeline an autoscaler on the twin)."""
    from entrypoints.commands.serving import serve
    from entrypoints.worker.runtime import load_wiring

    if not settings.embedded:
        raise click.ClickException("gpuops daemon is the embedded mode: unset GPUOPS_BROKER_URL, or run "
                                   "`gpuops worker` and `gpuops beat` against the broker")
    obj = ctx.ensure_object(dict)
    obj["settings"] = settings
    migrate.upgrade(settings.database_url)
    if wiring:
        try:
            container = load_wiring(wiring)(settings)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        obj["container"] = container
        ctx.call_on_close(container.close)
    # one container for the scheduler and the API: one scrape loop, one cluster client, one pipeline
    from entrypoints.worker.embedded import EmbeddedScheduler

    try:
        scheduler = EmbeddedScheduler(container_from(ctx), clock=clock, rate=rate)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if prepare is not None:
        prepare(scheduler)
    if scheduler.autoscale.enabled and scheduler.pipeline.autoscaler is None:  # misconfigured: say so at start
        from connectors.kubernetes.errors import ClusterError
        from gpuops.autoscale.wiring import autoscaler_for

        try:
            scheduler.pipeline.autoscaler = autoscaler_for(scheduler.pipeline.container, scheduler.pipeline.deps,
                                                           settings=scheduler.autoscale)
        except (ConfigError, ClusterError) as exc:
            raise click.ClickException(f"GPUOPS_AUTOSCALE_ENABLED is set, but: {exc}") from exc
    log.info("daemon started", extra={"shards": settings.shards, "cycle_s": settings.cycle_seconds})
    if not api:
        with contextlib.suppress(KeyboardInterrupt):
            scheduler.run_forever()
        return
    thread = threading.Thread(target=scheduler.run_forever, name="gpuops-scheduler", daemon=True)
    thread.start()
    try:
        serve(ctx, settings.api_host, settings.api_port, pipeline=scheduler.pipeline)
    finally:
        scheduler.stop()
        thread.join(timeout=30)


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), default=None,
              help="Worker processes (default: the number of CPUs).")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True)
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: all gpuops queues).")
@click.option("--hostname", "-n", default=None, help="Worker node name (default celery@HOST).")
@_WIRING
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, pool: str, queues: str | None, hostname: str | None,
           wiring: str | None) -> None:
    """Run a Celery worker on GPUOPS_BROKER_URL (start as many as the fleet needs)."""
    from gpuops.pipeline import QUEUES

    settings = settings_from(ctx)
    if settings.embedded:
        raise click.ClickException("GPUOPS_BROKER_URL is not set; set it to a Redis URL, or run `gpuops daemon`")
    if not migrate.is_up_to_date(settings.database_url):
        raise click.ClickException("the database schema is not at the current revision; run `gpuops db upgrade`")
    app = _app(ctx, wiring)
    argv = ["worker", f"--pool={pool}", f"--queues={queues or ','.join(QUEUES)}", "--without-gossip",
            "--without-mingle", f"--loglevel={settings.log_level}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)  # type: ignore[attr-defined]


@click.command("beat")
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Send each shard's detection cycle every GPUOPS_CYCLE_SECONDS, and the sweeps. Run exactly one (a second
    one by mistake only sends duplicates, which the cycles' lock makes no-ops)."""
    from celery.beat import Service

    from entrypoints.worker.beat import CycleScheduler

    settings = settings_from(ctx)
    if settings.embedded:
        raise click.ClickException("GPUOPS_BROKER_URL is not set; set it to a Redis URL, or run `gpuops daemon`")
    app = _app(ctx, None)
    log.info("beat started", extra={"shards": settings.shards, "cycle_s": settings.cycle_seconds})
    service = Service(app=app, scheduler_cls=CycleScheduler, max_interval=min(5.0, settings.cycle_seconds))
    try:
        service.start()
    except KeyboardInterrupt:
        service.stop()


def register(group: click.Group) -> None:
    group.add_command(daemon)
    group.add_command(worker)
    group.add_command(beat)
