"""The demo's fleet: the twin on a loopback port at accelerated speed, and settings that point the embedded
daemon at it through the same connectors it would use against a real fleet (direct scrape of the twin's
dcgm-exporter /metrics, the official Kubernetes client against the twin's API)."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.telemetry.serving import DemandSample, ScrapedServingDemand
from gpuops.autoscale.settings import AutoscaleSettings
from gpuops.autoscale.wiring import autoscaler_for
from gpuops.config import Settings
from gpuops.pipeline import Pipeline
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
    """A scenario file, or a bundled scenario by name (`autoscale` is simulator/scenarios/autoscale.yaml)."""
    if path is None:
        return load_scenario(DEMO_SCENARIO)
    bundled = DEMO_SCENARIO.parent / f"{path}.yaml"
    if not Path(path).is_file() and "/" not in path and bundled.is_file():
        return load_scenario(bundled)
    if not Path(path).is_file():
        names = ", ".join(sorted(p.stem for p in DEMO_SCENARIO.parent.glob("*.yaml")))
        raise FileNotFoundError(f"no scenario file {path!r} and no bundled scenario of that name ({names})")
    return load_scenario(path)


# -- the autoscaling demo (`gpuops demo --scenario autoscale`) ---------------------------------------------------

DAY_S = 86400.0
AUTOSCALE_LEAD_S = 600.0  # the live demo begins this long before today's surge (its first cycle reads two days first)


@dataclass
class ServingFleet:
    """The twin with inference Deployments, yesterday already run under a reactive scaler, and the demand gpuops
    reads (yesterday's samples kept as its history, today's scraped from the twin's /metrics). `surge_at` is
    infinite for a replayed trace, which has no daily surge."""

    twin: Twin
    demand: ScrapedServingDemand
    live_start: float
    surge_at: float
    served: ServedTwin | None = None
    clock: TwinClock | None = None
    gpu_budget: int = 8

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    def stop(self) -> None:
        if self.clock is not None:
            self.clock.stop()
        if self.served is not None:
            self.served.stop()
        self.demand.close()


def _surge_time_of_day(scenario: Scenario) -> float | None:
    surges = [m.surge.at for m in (scenario.serving.models if scenario.serving else []) if m.surge is not None]
    return min(surges) if surges else None


def serving_fleet(scenario: Scenario, *, today: float | None = None, lead_s: float = AUTOSCALE_LEAD_S,
                  history_s: float = 2 * DAY_S, period_s: float = 15.0) -> ServingFleet:
    """Run the days before the demo at once under a reactive scaler (one replica per request in flight, released
    after 300 s without need: what KEDA does on request counts), keeping what gpuops would have scraped, and stop
    `lead_s` before today's surge (today: the UTC day of `today`, default now). A scenario without a surge (a
    replayed trace, on its own clock) runs its first day so, and goes live after it, with the fleet's GPUs as
    the autoscaling budget."""
    surge = _surge_time_of_day(scenario)
    if surge is None:
        twin = Twin(scenario)
        live = twin.start + min(DAY_S, scenario.duration / 2)
        demand = ScrapedServingDemand([], clock=lambda: twin.t)
        run_reactive(twin, demand, until=live, period_s=period_s)
        return ServingFleet(twin, demand, live, math.inf,
                            gpu_budget=scenario.fleet.nodes * scenario.fleet.gpus_per_node)
    day = math.floor((time.time() if today is None else today) / DAY_S) * DAY_S
    live = day + surge - lead_s
    twin = Twin(scenario.model_copy(update={"start": live - history_s}))
    demand = ScrapedServingDemand([], clock=lambda: twin.t)
    run_reactive(twin, demand, until=live, period_s=period_s)
    return ServingFleet(twin, demand, live, day + surge)


def run_reactive(twin: Twin, demand: ScrapedServingDemand, *, until: float, period_s: float = 15.0) -> None:
    """Run the twin at once to `until` under the reactive stand-in, keeping in `demand` every `period_s` what
    gpuops would have scraped from its vLLM metrics (its history when it starts)."""
    reactive = ReactiveStandIn()
    while twin.t + period_s <= until + 1e-9:
        twin.advance_to(twin.t + period_s)
        reactive.step(twin)
        assert twin.serving is not None
        counts = twin.serving.counts()
        ns = twin.serving.spec.namespace
        demand.keep(DemandSample(twin.t, {(ns, k): float(v[0]) for k, v in counts.items()},
                                 {(ns, k): float(v[1]) for k, v in counts.items()}))


def serve_serving_fleet(fleet: ServingFleet, *, speed: float) -> ServingFleet:
    """Serve the twin and run its clock at `speed`; gpuops' demand then scrapes its /metrics."""
    fleet.served = serve_twin(fleet.twin, name="demo-twin")
    fleet.demand.urls = [f"{fleet.served.url}/metrics"]
    fleet.clock = TwinClock(fleet.twin, speed=speed)
    fleet.clock.start()
    return fleet


@dataclass
class ReactiveStandIn:
    """Yesterday's scaler: replicas = requests in flight (up at once), down only to the most wanted over 300 s."""

    window_s: float = 300.0
    wanted: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def step(self, twin: Twin) -> None:
        assert twin.serving is not None
        ns = twin.serving.spec.namespace
        for name, server in twin.serving.servers.items():
            busy = sum(1 for r in server.replicas.values() if r.busy_until is not None)
            want = min(max(busy + len(server.queue), server.spec.min_replicas), server.spec.max_replicas)
            history = [(t, w) for t, w in self.wanted.get(name, []) if t > twin.t - self.window_s] + [(twin.t, want)]
            self.wanted[name] = history
            target = max(w for _, w in history)
            if target != int(twin.kube.get_object("deployments", ns, name)["spec"]["replicas"]):
                twin.kube.set_scale(ns, name, target)


@dataclass
class SurgeStory:
    """What the demo tells, read from the twin: replicas turning ready, the surge beginning (and how many replicas
    were ready for it), and the surge's waits against yesterday's."""

    fleet: ServingFleet
    ready: dict[str, int] = field(default_factory=dict)
    told_surge: bool = False
    told_waits: bool = False
    ready_at_surge: dict[str, int] = field(default_factory=dict)

    def _stamp(self, t: float) -> str:
        return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S")

    def begin(self) -> list[str]:
        if not math.isfinite(self.fleet.surge_at):
            start = self.fleet.twin.start
            return [f"the replayed trace until {self._stamp(self.fleet.live_start)} UTC under a reactive scaler: "
                    + self._waits(start, self.fleet.live_start - start, surging=False)]
        return [f"yesterday's surge at {self._stamp(self.fleet.surge_at)} UTC under a reactive scaler: "
                + self._waits(self.fleet.surge_at - DAY_S)]

    def _waits(self, start: float, span: float = 3600.0, *, surging: bool = True) -> str:
        twin = self.fleet.twin
        assert twin.serving is not None
        if not surging:  # every Deployment together
            waits = [w for server in twin.serving.servers.values() for a, w in server.waits
                     if start <= a < start + span]
            over = sum(1 for w in waits if w > 5) / max(len(waits), 1)
            return f"{len(waits)} requests to {len(twin.serving.servers)} Deployments, {over:.0%} waited over 5 s"
        parts = []
        for name, server in twin.serving.servers.items():
            waits = [w for a, w in server.waits if start <= a < start + span]
            if server.spec.surge is None or not waits:
                continue
            over = sum(1 for w in waits if w > 5) / len(waits)
            parts.append(f"{name}: {len(waits)} requests, wait p50 {statistics.median(waits):.0f} s, "
                         f"p95 {sorted(waits)[int(0.95 * (len(waits) - 1))]:.0f} s, {over:.0%} waited over 5 s")
        return "; ".join(parts) or "no requests"

    def poll(self) -> list[str]:
        twin = self.fleet.twin
        assert twin.serving is not None
        lines: list[str] = []
        for name, server in twin.serving.servers.items():
            n = len(server.replicas)
            if n != self.ready.get(name, 0):
                lines.append(f"{self._stamp(twin.t)} {name}: {n} replica(s) ready (was {self.ready.get(name, 0)}), "
                             f"{sum(1 for r in server.replicas.values() if r.busy_until is not None)} busy, "
                             f"{len(server.queue)} waiting")
                self.ready[name] = n
        if not self.told_surge and twin.t >= self.fleet.surge_at:
            self.told_surge = True
            self.ready_at_surge = {name: len(s.replicas) for name, s in twin.serving.servers.items()}
            lines.append(f"{self._stamp(twin.t)} the surge begins with "
                         + ", ".join(f"{k}: {v} replica(s) ready" for k, v in self.ready_at_surge.items()))
        if not self.told_waits and twin.t >= self.fleet.surge_at + 3600:
            self.told_waits = True
            lines.append(f"today's surge with gpuops: {self._waits(self.fleet.surge_at)}")
        return lines


def attach_autoscaler(pipeline: Pipeline, container: Container, fleet: ServingFleet) -> AutoscaleSettings:
    """Give the pipeline the autoscaling cycle on the serving fleet (its demand: yesterday's samples, then the
    twin's /metrics); the settings returned run it every 15 s of the fleet's time, for the scheduler."""
    autoscale = AutoscaleSettings(enabled=True, period_seconds=15.0, gpu_budget=fleet.gpu_budget,
                                  history_seconds=2 * DAY_S)
    pipeline.autoscaler = autoscaler_for(container, pipeline.deps, settings=autoscale, demand=fleet.demand)
    return autoscale
