"""gpuops' scaler live on the twin's replay of a request trace, against the same span replayed offline.

The twin serves the scenario's replayed Deployments (`serving.replay`, simulator/serving.py). Its first
`history_s` run at once under the reactive stand-in, keeping what gpuops would have scraped (its demand history
when it starts); then gpuops' production autoscaling cycle runs every 15 s of the twin's time through the twin's
Kubernetes API and vLLM /metrics, scaling by runbook under policy (replica bounds, the GPU budget, the scale-down
cool-down). Over the live span it measures what users waited (requests arriving in the span, each until the
service that completed it began), the requests interrupted by a scale-down that removed their replica, and
GPU-hours (each replica pod from creation to deletion, model load included, sampled every step).

The same span of the trace, for the same base models and with cold starts drawn from the same recorded loads,
then goes through the offline replica simulator (`gpuops autoscale eval`'s) under gpuops' planner and reactive:
the live figures read against the offline ones of the same run."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from connectors.telemetry.serving import ScrapedServingDemand
from evaluation.autoscale.baselines import Reactive
from evaluation.autoscale.replay import ColdStarts, ReplicaSimulator
from evaluation.autoscale.run import WAIT_THRESHOLD_S
from evaluation.demo import run_reactive
from gpuops.autoscale.planner import DemandPlanner, PlannerSettings
from gpuops.autoscale.settings import AutoscaleSettings
from gpuops.autoscale.wiring import autoscaler_for
from gpuops.config import Settings
from gpuops.pipeline import OrderedDispatcher, Pipeline, Step
from gpuops.store import migrate
from gpuops.wiring import bootstrap
from simulator.request_trace import RequestTrace
from simulator.scenario import Scenario
from simulator.scenario_files import load_scenario
from simulator.server import serve_twin
from simulator.twin import Twin

PERIOD_S = 15.0


@dataclass(frozen=True)
class LiveInputs:
    scenario: Path
    history_s: float = 86400.0
    live_s: float | None = None      # default: the rest of the scenario
    seed: int = 0
    scale_down_cooldown_s: float = AutoscaleSettings.model_fields["scale_down_cooldown_seconds"].default


def _summary(waits: np.ndarray[Any, Any], gpu_seconds: float, policy: str) -> dict[str, Any]:
    if waits.size == 0:
        return {"policy": policy, "requests": 0, "gpu_hours": round(gpu_seconds / 3600.0, 2)}
    return {"policy": policy, "requests": int(waits.size), "gpu_hours": round(gpu_seconds / 3600.0, 2),
            "wait_p50_s": round(float(np.percentile(waits, 50)), 2),
            "wait_p95_s": round(float(np.percentile(waits, 95)), 2),
            "wait_p99_s": round(float(np.percentile(waits, 99)), 2),
            "share_wait_over_5s": round(float(np.mean(waits > WAIT_THRESHOLD_S)), 4)}


def _namespace(scenario: Scenario) -> str:
    serving = scenario.serving
    if serving is None or serving.replay is None:
        raise ValueError(f"scenario {scenario.name!r} has no `serving.replay` of a request trace to run live")
    return serving.namespace


def run_live(inputs: LiveInputs) -> dict[str, Any]:
    """Run the scenario's replayed Deployments under gpuops' live autoscaling cycle, then the same span offline."""
    started = time.perf_counter()
    scenario = load_scenario(inputs.scenario)
    namespace = _namespace(scenario)
    twin = Twin(scenario)
    live_start = twin.start + inputs.history_s
    end = twin.end if inputs.live_s is None else min(twin.end, live_start + inputs.live_s)
    if end - live_start < PERIOD_S:
        raise ValueError(f"scenario {scenario.name!r} is {twin.end - twin.start:g} s long: nothing is left to run "
                         f"live after {inputs.history_s:g} s of history")
    demand = ScrapedServingDemand([], clock=lambda: twin.t)
    run_reactive(twin, demand, until=live_start, period_s=PERIOD_S)
    served = serve_twin(twin)
    demand.urls = [f"{served.url}/metrics"]
    gpus = scenario.fleet.nodes * scenario.fleet.gpus_per_node
    gpu_seconds = 0.0
    cycles = 0
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/live.db"
        migrate.upgrade(url)
        container = bootstrap(Settings(database_url=url, kube_api_url=served.url, kube_verify_ssl=False,
                                       dry_run=False, scrape_urls=(f"{served.url}/metrics",)))
        try:
            dispatcher = OrderedDispatcher(lambda: twin.t)
            pipeline = Pipeline(container, dispatcher, clock=lambda: twin.t, worker="autoscale-live")
            dispatcher.bind(pipeline.run)
            settings = AutoscaleSettings(enabled=True, period_seconds=PERIOD_S, gpu_budget=gpus,
                                         history_seconds=min(inputs.history_s, 7 * 86400.0),
                                         scale_down_cooldown_seconds=inputs.scale_down_cooldown_s)
            pipeline.autoscaler = autoscaler_for(container, pipeline.deps, settings=settings, demand=demand)
            live_began = time.perf_counter()
            while twin.t + PERIOD_S <= end + 1e-9:
                twin.advance_to(twin.t + PERIOD_S)
                pipeline.run(Step.AUTOSCALE, {})  # the step the daemon's scheduler runs every period
                dispatcher.drain()
                cycles += 1
                pods, _ = twin.kube.list_objects("pods", namespace)
                gpu_seconds += PERIOD_S * sum(1 for p in pods if "deletionTimestamp" not in p["metadata"])
            live_seconds = time.perf_counter() - live_began
        finally:
            container.close()
            served.stop()
            demand.close()
    assert twin.serving is not None
    waits = np.array([w for server in twin.serving.servers.values() for a, w in server.waits
                      if live_start <= a < end], dtype=np.float64)
    interrupted = sum(1 for server in twin.serving.servers.values() for at in server.interruptions
                      if live_start <= at < end)
    offline = _offline(twin, live_start, end, inputs.seed,
                       max(s.spec.max_replicas for s in twin.serving.servers.values()))
    return {
        "scenario": scenario.name,
        "deployments": len(twin.serving.servers),
        "live_hours": round((end - live_start) / 3600.0, 2),
        "history_hours": round(inputs.history_s / 3600.0, 2),
        "gpu_budget": gpus,
        "scale_down_cooldown_s": inputs.scale_down_cooldown_s,
        "live": _summary(waits, gpu_seconds, "gpuops (live)") | {"requests_interrupted": interrupted},
        "offline": offline,
        "cycles": cycles,
        "seconds_per_cycle": round(live_seconds / max(cycles, 1), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _offline(twin: Twin, start: float, end: float, seed: int,
             max_replicas: int) -> dict[str, Any]:
    """The requests the twin replayed before `end` (history included, as the live scaler had it) through the
    offline replica simulator under gpuops' planner and under reactive, measured over the live span [start,
    end) as the live run is: waits of the requests arriving in it, and replicas held at each cycle in it."""
    assert twin.serving is not None
    servers = list(twin.serving.servers.values())
    arrival = np.concatenate([s.arrivals for s in servers])
    service = np.concatenate([s.service_times for s in servers])
    model = np.concatenate([np.full(len(s.arrivals), i, dtype=np.int64) for i, s in enumerate(servers)])
    keep = arrival < end
    order = np.argsort(arrival[keep], kind="stable")
    trace = RequestTrace(arrival[keep][order], service[keep][order], model[keep][order],
                         tuple(s.spec.model_name for s in servers))
    in_span = trace.arrival >= start
    if not in_span.any():
        return {}
    loads = twin.serving.loads  # the recorded loads the twin drew from, else each Deployment's own cold start
    observed = loads if loads is not None else np.array([s.spec.cold_start for s in servers])
    simulator = ReplicaSimulator(trace, ColdStarts(observed, len(servers), seed), period=PERIOD_S)
    first = math.floor(float(trace.arrival[0]) / PERIOD_S) * PERIOD_S
    out = {}
    n = len(servers)
    for policy in (DemandPlanner(n, PlannerSettings(period_s=PERIOD_S, max_replicas=max_replicas)),
                   Reactive(n, period_s=PERIOD_S)):
        result = simulator.run(policy, record=True)
        assert result.decisions is not None
        at = first + PERIOD_S * np.arange(len(result.decisions))
        held = result.decisions[(at >= start) & (at < end)].sum()
        out[result.policy] = _summary(result.wait[in_span], PERIOD_S * float(held), result.policy)
    return out
