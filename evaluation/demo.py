"""The demo's fleet: the twin on a loopback port at accelerated speed, and settings that point the embedded
daemon at it through the same connectors it would use against a real fleet (direct scrape of the twin's
dcgm-exporter /metrics, the official Kubernetes client against the twin's API)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpuops.config import Settings
from gpuops.scraping import ScrapeLoop, SharedScrapeTelemetry
from gpuops.wiring import Container, bootstrap
from simulator.scenario import Scenario
from simulator.scenario_files import load_scenario
from simulator.server import ServedTwin, TwinClock, serve_twin
from simulator.twin import Twin

DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "demo.yaml"


@dataclass
class DemoFleet:
    """A running twin: its clock thread and its HTTP server."""

    twin: Twin
    clock: TwinClock
    served: ServedTwin

    @property
    def url(self) -> str:
        return self.served.url

    def stop(self) -> None:
        self.clock.stop()
        self.served.stop()


def start_fleet(scenario: Scenario, *, speed: float, port: int = 0, start: float | None = None,
                warmup_s: float = 0.0) -> DemoFleet:
    """Serve the twin on 127.0.0.1:`port` (0 = any free port) and run its clock at `speed` × real time.
    The twin first runs `warmup_s` simulated seconds at once (its jobs start on cold GPUs at t=0; a real fleet
    gpuops starts on is already warm), so that served time begins at `start` (default: the scenario's start
    plus the warm-up). Fault times in the scenario count from t=0, before the warm-up."""
    if start is not None:
        scenario = scenario.model_copy(update={"start": start - warmup_s})
    twin = Twin(scenario)
    if warmup_s > 0:
        twin.advance_to(twin.t + warmup_s)
    served = serve_twin(twin, port=port, name="demo-twin")
    clock = TwinClock(twin, speed=speed)
    clock.start()
    return DemoFleet(twin, clock, served)


def demo_settings(base: Settings, fleet: DemoFleet) -> Settings:
    """The embedded daemon's settings for the demo fleet: act on its Kubernetes API for real, one detection
    cycle every two of the twin's steps. Times are in the fleet's simulated seconds."""
    step = fleet.twin.step_s
    return base.model_copy(update={
        "scrape_urls": (f"{fleet.url}/metrics?timestamps=true",), "prometheus_url": None,
        "kube_api_url": fleet.url, "kube_verify_ssl": False, "step_seconds": step, "cycle_seconds": 2 * step,
        "window_seconds": max(60 * step, 900.0), "sweep_seconds": 2 * step, "dry_run": False, "broker_url": None,
    })


def demo_container(settings: Settings, fleet: DemoFleet) -> Container:
    """The container for the demo: the twin's dcgm-exporter scraped every simulated step (a fraction of a real
    second at speed), its samples stamped with the fleet's simulated time so that every detector, forecast and
    cycle sees the fleet's own time scale."""
    telemetry = SharedScrapeTelemetry(list(settings.scrape_urls), window_s=max(settings.window_seconds * 2, 3600.0),
                                      clock=fleet.clock.now)
    # twice per step, so that no step is missed when a scrape runs late
    loop = ScrapeLoop(telemetry, settings.step_seconds / fleet.clock.speed / 2).start()
    container = bootstrap(settings, telemetry=telemetry)
    container.add_closer(loop)
    container.add_closer(telemetry)
    return container


def load_demo_scenario(path: str | None) -> Scenario:
    return load_scenario(path or DEMO_SCENARIO)
