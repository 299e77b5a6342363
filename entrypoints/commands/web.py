"""`gpuops api` and `gpuops demo`."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from domain import clock as gpuops_clock
from entrypoints.commands.context import settings_from
from entrypoints.commands.serving import serve
from gpuops.store import migrate

if TYPE_CHECKING:
    from gpuops.config import Settings
    from simulator.scenario import Scenario

log = logging.getLogger(__name__)


@click.command("api")
@click.option("--host", default=None, help="Address to bind (default GPUOPS_API_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default GPUOPS_API_PORT or 8080).")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard, the JSON API, /healthz and /metrics."""
    settings = settings_from(ctx)
    serve(ctx, host or settings.api_host, settings.api_port if port is None else port)


@click.command("demo")
@click.option("--scenario", "scenario_path", default=None, metavar="FILE|NAME",
              help="Scenario to run: a file, or a bundled one by name (default: demo, a GPU falling off the bus a "
                   "few minutes in; autoscale: inference replicas started ahead of a daily surge).")
@click.option("--speed", default=10.0, show_default=True, type=click.FloatRange(1.0, 100.0),
              help="Simulated time runs this many times faster than real time.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--database-url", default="sqlite:///./gpuops-demo.db", show_default=True,
              help="The demo's store; a SQLite file is started afresh on every run.")
@click.pass_context
def demo(ctx: click.Context, scenario_path: str | None, speed: float, host: str, port: int,
         database_url: str) -> None:
    """The whole system on embedded defaults: the simulated fleet at accelerated speed, read through the same
    connectors as a real one (dcgm-exporter scrape, the Kubernetes API), the rules planner, the dashboard."""
    from entrypoints.commands.daemon import run_embedded
    from entrypoints.web.auth import DEMO_ADMIN, DEMO_SECOND_APPROVER, demo_admin, demo_second_approver
    from evaluation.demo import demo_container, demo_settings, load_demo_scenario, start_fleet

    base = settings_from(ctx).model_copy(update={"database_url": database_url, "api_host": host, "api_port": port})
    _fresh_sqlite(database_url)
    try:
        scenario = load_demo_scenario(scenario_path)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from exc
    if scenario.serving is not None:
        _demo_autoscale(ctx, scenario, base, speed=speed, host=host, port=port)
        return
    fleet = start_fleet(scenario, speed=speed, start=float(int(time.time())), warmup_s=DEMO_WARMUP_S)
    gpuops_clock.use(fleet.clock.now)  # what the dashboard, the agent and detection store shares the fleet's time
    settings, password = demo_admin(demo_settings(base, fleet))
    settings, second_password = demo_second_approver(settings)
    migrate.upgrade(settings.database_url)
    container = demo_container(settings, fleet)
    obj = ctx.ensure_object(dict)
    obj["settings"], obj["container"] = settings, container
    ctx.call_on_close(container.close)
    click.echo(f"gpuops demo: fleet twin '{scenario.name}' ({scenario.fleet.nodes} nodes x "
               f"{scenario.fleet.gpus_per_node} GPUs) at {fleet.url}, {speed:g}x real time")
    click.echo(f"gpuops demo: dashboard at http://{host}:{port}/  (Ctrl-C to stop)")
    click.echo(f"gpuops demo: sign in as {DEMO_ADMIN} with password {password}  (valid for this run only)")
    click.echo(f"gpuops demo: the reboot is high risk and needs a second approver: sign in as {DEMO_SECOND_APPROVER} "
               f"with password {second_password} in another browser (or a private window)")
    click.echo("gpuops demo: in about a minute a GPU falls off the bus; its incident waits for your approval")
    click.echo(f"gpuops demo: the store is {_store_location(database_url)}; from another terminal: "
               f"GPUOPS_DATABASE_URL='{_absolute(database_url)}' gpuops incidents list")
    try:
        run_embedded(ctx, settings, api=True, clock=fleet.clock.now, rate=speed)
    finally:
        fleet.stop()


DEMO_WARMUP_S = 1800.0  # the demo scenario's faults come after this much simulated time


def _demo_autoscale(ctx: click.Context, scenario: Scenario, base: Settings, *, speed: float, host: str,
                    port: int) -> None:
    """The autoscaling demo: yesterday run at once under a reactive scaler, today live a few minutes before the
    daily surge, gpuops' autoscaling cycle on the twin's Kubernetes API and vLLM metrics, the story told as it
    happens (and logged at INFO)."""
    import threading

    from entrypoints.commands.daemon import run_embedded
    from entrypoints.web.auth import DEMO_ADMIN, demo_admin
    from entrypoints.worker.embedded import EmbeddedScheduler
    from evaluation.demo import (
        DemoFleet,
        SurgeStory,
        attach_autoscaler,
        demo_container,
        demo_settings,
        serve_serving_fleet,
        serving_fleet,
    )

    click.echo(f"gpuops demo: running the day before of '{scenario.name}' under a reactive scaler (seconds to a "
               "minute)...")
    fleet = serve_serving_fleet(serving_fleet(scenario), speed=speed)
    assert fleet.clock is not None and fleet.served is not None
    gpuops_clock.use(fleet.clock.now)
    served = DemoFleet(fleet.twin, fleet.clock, fleet.served)
    settings, password = demo_admin(demo_settings(base, served))
    migrate.upgrade(settings.database_url)
    container = demo_container(settings, served)
    obj = ctx.ensure_object(dict)
    obj["settings"], obj["container"] = settings, container
    ctx.call_on_close(container.close)
    story = SurgeStory(fleet)

    def prepare(scheduler: EmbeddedScheduler) -> None:
        scheduler.autoscale = attach_autoscaler(scheduler.pipeline, container, fleet)

    def tell(lines: list[str]) -> None:
        for line in lines:  # the daemon's log carries gpuops' own side: plans, decisions, actions
            log.info("autoscale demo: %s", line)

    stop = threading.Event()

    def narrate() -> None:
        while not stop.wait(0.25):
            try:
                tell(story.poll())
            except RuntimeError:  # the twin moved on while it was read; the next look sees it
                continue

    click.echo(f"gpuops demo: fleet twin at {fleet.url}, {speed:g}x real time; dashboard at http://{host}:{port}/ "
               f"(sign in as {DEMO_ADMIN} with password {password})")
    tell(story.begin())
    if math.isfinite(fleet.surge_at):
        click.echo(f"gpuops demo: today's surge is due at {story._stamp(fleet.surge_at)} UTC, "
                   f"{(fleet.surge_at - fleet.twin.t) / 60:.0f} simulated minutes from now; gpuops plans every 15 s "
                   "(its scale actions are on the dashboard's incidents, one per Deployment and day)")
    else:
        click.echo(f"gpuops demo: the replayed trace goes on from {story._stamp(fleet.twin.t)} UTC under gpuops, "
                   "which plans every 15 s (its scale actions are on the dashboard's incidents, one per Deployment "
                   "and day)")
    narrator = threading.Thread(target=narrate, name="autoscale-story", daemon=True)
    narrator.start()
    try:
        run_embedded(ctx, settings, api=True, clock=fleet.clock.now, rate=speed, prepare=prepare)
    finally:
        stop.set()
        fleet.stop()


def _absolute(database_url: str) -> str:
    """The URL with a relative SQLite path made absolute, so it works from any folder."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return url.set(database=str(Path(url.database).resolve())).render_as_string(hide_password=False)
    return url.render_as_string(hide_password=True)


def _store_location(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return str(Path(url.database).resolve())
    return url.render_as_string(hide_password=True)


def _fresh_sqlite(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(url.database + suffix).unlink(missing_ok=True)


def register(group: click.Group) -> None:
    group.add_command(api)
    group.add_command(demo)
