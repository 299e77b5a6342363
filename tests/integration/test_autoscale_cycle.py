"""The live autoscaling cycle against the twin over real HTTP: the official Kubernetes client on the twin's API (the
scale subresource, HPAs, KEDA ScaledObjects), the inference servers' vLLM series scraped from its /metrics, the
store on SQLite and PostgreSQL, the pipeline's embedded scheduler running the step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from connectors.kubernetes import DELETION_COST_ANNOTATION, SPARED_ANNOTATION
from connectors.telemetry.serving import DemandSample, ScrapedServingDemand
from domain import ActionStatus, IncidentStatus
from entrypoints.worker.embedded import EmbeddedScheduler
from gpuops.autoscale.cycle import AutoscaleReport
from gpuops.autoscale.settings import AutoscaleSettings
from gpuops.autoscale.wiring import autoscaler_for
from gpuops.config import Settings
from gpuops.execution.approvals import Approver
from gpuops.notify import NullNotifier
from gpuops.pipeline import Step
from gpuops.slack_notifier import prompt_for
from gpuops.store import migrate
from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, AuditEvent, AutoscaleColdStart, Incident
from gpuops.wiring import Container, bootstrap
from simulator.scenario import scenario_from_dict
from simulator.server import ServedTwin, serve_twin
from simulator.twin import Twin

NS = "serving"


class AskedApprovers(NullNotifier):
    """The notifier's edge (Slack's side is tested elsewhere): which actions approvers were asked about."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def approval_requested(self, action_id: int) -> None:
        self.asked.append(action_id)


@dataclass
class World:
    twin: Twin
    served: ServedTwin
    container: Container
    scheduler: EmbeddedScheduler
    demand: ScrapedServingDemand
    notifier: AskedApprovers

    def replicas(self, name: str) -> int:
        return int(self.twin.kube.get_object("deployments", NS, name)["spec"]["replicas"])

    def run(self, seconds: float = 15.0) -> AutoscaleReport:
        """Advance the twin, then run the pipeline's autoscaling step as the scheduler does."""
        self.twin.advance_to(self.twin.t + seconds)
        report: AutoscaleReport = self.scheduler.pipeline.run(Step.AUTOSCALE, {})
        self.scheduler.dispatcher.drain()
        return report

    def actions(self) -> list[Action]:
        with self.container.uow() as uow:
            return list(uow.session.scalars(select(Action).order_by(Action.id)))


def model(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "cold_start": "30s", "service_time": "60s", "replicas": 0, "max_replicas": 6, **extra}


@pytest.fixture
def world_factory(sqlite_url: str) -> Iterator[Any]:
    made: list[World] = []

    def make(models: list[dict[str, Any]], *, budget: int = 16, cooldown_s: float = 300.0,
             db_url: str = sqlite_url) -> World:
        scenario = scenario_from_dict({"name": "autoscale-test", "seed": 5, "duration": "6h", "step": "15s",
                                       "fleet": {"nodes": 2, "gpus_per_node": 8}, "workloads": [],
                                       "serving": {"namespace": NS, "models": models}}, source="test")
        twin = Twin(scenario)
        served = serve_twin(twin)
        migrate.upgrade(db_url)
        notifier = AskedApprovers()
        container = bootstrap(Settings(database_url=db_url, kube_api_url=served.url, kube_verify_ssl=False,
                                       dry_run=False), notifier=notifier)
        settings = AutoscaleSettings(enabled=True, gpu_budget=budget, scale_down_cooldown_seconds=cooldown_s,
                                     history_seconds=0)
        scheduler = EmbeddedScheduler(container, clock=lambda: twin.t, autoscale=settings)
        demand = ScrapedServingDemand([f"{served.url}/metrics"], clock=lambda: twin.t)
        scheduler.pipeline.autoscaler = autoscaler_for(container, scheduler.pipeline.deps, settings=settings,
                                                       demand=demand)
        world = World(twin, served, container, scheduler, demand, notifier)
        made.append(world)
        return world

    yield make
    for world in made:
        world.demand.close()
        world.container.close()
        world.served.stop()


def test_scales_through_the_scale_subresource_and_never_writes_a_deployment_an_hpa_or_keda_owns(
        world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=600), model("llm-b", base_rate=600, owner="hpa"),
                                  model("llm-c", base_rate=600, owner="keda")])
    first = world.run(60)
    assert first.errors == []
    assert world.replicas("llm-a") >= 1
    a = first.of("serving/llm-a")
    assert a is not None and a.desired is not None and a.desired >= 1
    for name in ("llm-b", "llm-c"):
        row = first.of(f"serving/{name}")
        assert row is not None and row.owner == "hpa-or-keda" and row.decision.startswith("published only")
    for _ in range(6):
        world.run()
    assert world.replicas("llm-b") == 0 and world.replicas("llm-c") == 0  # demand there, but not gpuops' to scale
    published = world.container.metrics.registry.get_sample_value(
        "gpuops_desired_replicas", {"namespace": NS, "deployment": "llm-b"})
    assert published is not None and published >= 1
    actions = world.actions()
    assert actions and all(a.targets == ["deployment/serving/llm-a"] for a in actions)
    assert all(a.status == ActionStatus.SUCCEEDED for a in actions)
    with world.container.uow() as uow:
        steps = [e.data for e in uow.session.scalars(select(AuditEvent).where(AuditEvent.kind == "action.step"))]
        assert any(s["step"] == "set_replicas" and s["ok"] for s in steps)
        incidents = list(uow.session.scalars(select(Incident)))
        assert len(incidents) == 1  # one incident for the Deployment's day, not one per decision
        assert incidents[0].family == "autoscale" and incidents[0].status == IncidentStatus.RESOLVED
        assert verify_chain(uow.session).ok
    # the cold start was learned from the pods (created → Ready), the twin's 30 s in whole 15 s steps
    cold = [s for k, s in first.cold_starts + [c for r in [world.run()] for c in r.cold_starts] if k == "serving/llm-a"]
    assert world.scheduler.pipeline.autoscaler is not None
    scaler = world.scheduler.pipeline.autoscaler.scaler
    assert scaler is not None and 30.0 <= scaler.planner.cold_start_s[scaler.deployments.index((NS, "llm-a"))] <= 45.0
    assert all(30.0 <= s <= 45.0 for s in cold)


def test_learned_cold_starts_outlive_the_process_and_the_pods(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=600)])
    for _ in range(6):
        world.run()
    with world.container.uow() as uow:
        recorded = list(uow.session.scalars(select(AutoscaleColdStart)))
    assert recorded and all(30.0 <= r.seconds <= 45.0 for r in recorded)
    world.twin.kube.set_scale(NS, "llm-a", 0)  # its pods go away
    world.twin.advance_to(world.twin.t + 120)
    assert world.twin.kube.list_objects("pods", NS)[0] == []
    restarted = autoscaler_for(world.container, world.scheduler.pipeline.deps,
                               settings=AutoscaleSettings(enabled=True, history_seconds=0), demand=world.demand)
    restarted.run(world.twin.t)
    assert restarted.scaler is not None
    learned = float(restarted.scaler.planner.cold_start_s[restarted.scaler.deployments.index((NS, "llm-a"))])
    assert 30.0 <= learned <= 45.0  # not the planner's default: read back from the store
    with world.container.uow() as uow:  # one row per pod, whoever saw it
        pods = list(uow.session.scalars(select(AutoscaleColdStart.pod)))
    assert len(pods) == len(set(pods)) >= len(recorded)


def test_two_workers_handed_the_same_period_decide_once(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=600)])
    world.twin.advance_to(world.twin.t + 60)
    other = autoscaler_for(world.container, world.scheduler.pipeline.deps,
                           settings=AutoscaleSettings(enabled=True, history_seconds=0), demand=world.demand)
    first = other.run(world.twin.t)
    second = world.scheduler.pipeline.run(Step.AUTOSCALE, {})  # the same period, redelivered elsewhere
    assert first.actions and first.skipped == ""
    assert second.actions == [] and second.skipped.startswith("another worker ran the cycle at")
    assert len(world.actions()) == len(first.actions)


def test_bounds_hold_and_above_the_budget_a_human_decides(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=1800, max_replicas=5, gpus_per_replica=2)], budget=4)
    world.run(120)
    world.run()
    actions = world.actions()
    auto = [a for a in actions if a.approvals_required == 0]
    waiting = [a for a in actions if a.status == ActionStatus.AWAITING_APPROVAL]
    assert auto and auto[-1].status == ActionStatus.SUCCEEDED
    assert world.replicas("llm-a") == 2  # 4 GPUs of budget / 2 GPUs a replica
    assert len(waiting) == 1 and waiting[0].parameters["replicas"] == 5  # bounded by max-replicas
    assert any("autoscaling budget of 4" in r for r in waiting[0].verdict["reasons"])
    assert world.notifier.asked == [waiting[0].id]
    with world.container.uow() as uow:
        incident = uow.session.get_one(Incident, waiting[0].incident_id)
        assert incident.status == IncidentStatus.AWAITING_APPROVAL
        prompt = prompt_for(uow.session, uow.session.get_one(Action, waiting[0].id), dashboard_url=None)
        assert prompt.location == "deployment serving/llm-a" and prompt.params["replicas"] == 5
    for _ in range(3):  # no new decision for it while one waits
        world.run()
    assert len(world.actions()) == len(actions)
    pipeline = world.scheduler.pipeline
    recorded = pipeline.decide(action_id=waiting[0].id, approver=Approver("alice", "dashboard", True),
                               decision="approve", plan_hash=waiting[0].plan_hash, reason="surge expected")
    assert recorded.outcome.refusal is None
    world.scheduler.dispatcher.drain()
    assert world.replicas("llm-a") == 5
    with world.container.uow() as uow:
        approved = uow.session.get_one(Action, waiting[0].id)
        assert approved.status == ActionStatus.SUCCEEDED
        assert uow.session.get_one(Incident, approved.incident_id).status == IncidentStatus.RESOLVED


def test_a_scale_down_waits_for_the_cool_down(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", replicas=4, min_replicas=1, base_rate=0.01)], cooldown_s=600)
    first = world.run(60)  # the four replicas the twin started have loaded
    # nothing in flight: the plan wants fewer; no gpuops scale yet, so the first scale-down may go
    assert world.replicas("llm-a") == 1, first.deployments
    world.twin.kube.set_scale(NS, "llm-a", 3)  # someone adds replicas; gpuops scaled 15 s ago
    held = world.run()
    row = held.of("serving/llm-a")
    assert row is not None and "cool-down: scaled at" in row.decision, row
    assert world.replicas("llm-a") == 3
    for _ in range(40):  # 600 s later it may shed them
        world.run()
    assert world.replicas("llm-a") == 1


def test_a_scale_down_spares_the_replica_that_is_serving(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", replicas=1, min_replicas=1, base_rate=0)], cooldown_s=0)
    twin = world.twin
    assert twin.serving is not None
    server = twin.serving.servers["llm-a"]
    for replicas in (2, 3):  # three replicas, created one after another
        twin.advance_to(twin.t + 45)
        twin.kube.set_scale(NS, "llm-a", replicas)
    twin.advance_to(twin.t + 45)
    pods, _ = twin.kube.list_objects("pods", NS)
    newest = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]
    server.queue.extend([(twin.t, 5.0, None), (twin.t, 5.0, None)])  # the two older replicas serve a moment
    twin.advance_to(twin.t + 15)
    server.queue.append((twin.t, 600.0, None))  # a long request: the replica idle longest, the newest, takes it
    twin.advance_to(twin.t + 15)
    assert [p for p, r in server.replicas.items() if r.busy_until is not None] == [newest]
    oldest = min(pods, key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]
    # the owner's own cost on a pod is theirs: gpuops neither changes nor clears it
    twin.kube.update_object("pods", NS, oldest, lambda p: p | {"metadata": p["metadata"] | {
        "annotations": {**(p["metadata"].get("annotations") or {}), DELETION_COST_ANNOTATION: "-5"}}})
    world.run()  # one request in flight and no demand ahead: 3 -> 1 replica
    assert world.replicas("llm-a") == 1
    twin.advance_to(twin.t + 30)
    # a ReplicaSet removes the newest pods first; marked as serving, the busy one stays and its user is not cut off
    assert list(server.replicas) == [newest] and server.interruptions == []
    kept = twin.kube.get_object("pods", NS, newest)
    assert kept["metadata"]["annotations"][DELETION_COST_ANNOTATION] == "1"
    assert kept["metadata"]["annotations"][SPARED_ANNOTATION] == "true"
    action = next(a for a in world.actions() if a.parameters["replicas"] == 1)
    assert action.parameters["busy_pods"] == {newest: 1}
    with world.container.uow() as uow:
        step = next(e.data for e in uow.session.scalars(select(AuditEvent).where(
            AuditEvent.kind == "action.step", AuditEvent.action_id == action.id)) if e.data["step"] == "set_replicas")
    assert step["data"]["deletion_costs"] == {newest: "1"} and "spared first: " + newest in step["detail"]
    # once it is idle, the next scale-down clears the mark gpuops set
    twin.advance_to(twin.t + 600)
    twin.kube.set_scale(NS, "llm-a", 2)
    twin.advance_to(twin.t + 45)
    world.run()
    assert world.replicas("llm-a") == 1
    annotations = twin.kube.get_object("pods", NS, newest)["metadata"].get("annotations") or {}
    assert DELETION_COST_ANNOTATION not in annotations and SPARED_ANNOTATION not in annotations


def test_missing_series_or_malformed_bounds_mean_no_action(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=600), model("llm-b", base_rate=600)])

    def only_llm_b(now: float) -> DemandSample:
        whole = ScrapedServingDemand.sample(world.demand, now)
        return DemandSample(whole.ts, {k: v for k, v in whole.in_flight.items() if k[1] != "llm-a"},
                            {k: v for k, v in whole.completed.items() if k[1] != "llm-a"})

    world.demand.sample = only_llm_b  # type: ignore[method-assign]

    def bad_bounds(dep: dict[str, Any]) -> dict[str, Any]:
        dep["metadata"]["annotations"]["gpuops.io/max-replicas"] = "lots"
        return dep

    world.twin.kube.update_object("deployments", NS, "llm-b", bad_bounds)
    report = world.run(60)
    assert any("serving/llm-a: no series for requests in flight" in e for e in report.errors)
    assert any("gpuops.io/max-replicas='lots' is not a whole number" in e for e in report.errors)
    assert world.replicas("llm-a") == 0 and world.replicas("llm-b") == 0
    assert world.actions() == []


def test_unreadable_demand_is_an_error_and_no_action(world_factory: Any) -> None:
    world: World = world_factory([model("llm-a", base_rate=600)])
    world.demand.urls = [f"{world.served.url}/no-such-metrics"]
    report = world.run(60)
    assert report.deployments == [] and world.actions() == []
    assert len(report.errors) == 1 and "demand could not be read" in report.errors[0]
    assert "nothing is scaled this cycle" in report.errors[0]


def test_on_postgres_too(world_factory: Any, postgres_url: str) -> None:
    world: World = world_factory([model("llm-a", base_rate=600)], db_url=postgres_url)
    world.run(60)
    world.run()
    assert world.replicas("llm-a") >= 1
    assert all(a.status == ActionStatus.SUCCEEDED for a in world.actions())
