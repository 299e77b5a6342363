"""`gpuops demo --scenario autoscale`, driven step by step: the bundled scenario's yesterday under a reactive
scaler, then today through the embedded scheduler's autoscaling step on the twin's Kubernetes API and /metrics.
gpuops learns the daily surge from yesterday and has a replica of llm-chat Ready before today's first request of
it; the story says so, and the scale actions are on the store's autoscaling incident."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from domain import ActionStatus
from entrypoints.worker.embedded import EmbeddedScheduler
from evaluation.demo import ServingFleet, SurgeStory, attach_autoscaler, load_demo_scenario, serving_fleet
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from simulator.server import serve_twin
from tests.unit.autoscale_traces import write_requests

TODAY = 1_796_000_000.0  # a fixed day, so the run is the same every time


def go_live(fleet: ServingFleet, sqlite_url: str) -> tuple[Container, EmbeddedScheduler]:
    """Serve the fleet's twin and give the embedded scheduler gpuops' autoscaling cycle on it, as the demo does."""
    fleet.served = serve_twin(fleet.twin)
    fleet.demand.urls = [f"{fleet.served.url}/metrics"]
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url, kube_api_url=fleet.served.url, kube_verify_ssl=False,
                                   dry_run=False, scrape_urls=(f"{fleet.served.url}/metrics",), cycle_seconds=3600))
    scheduler = EmbeddedScheduler(container, clock=lambda: fleet.twin.t)
    scheduler.autoscale = attach_autoscaler(scheduler.pipeline, container, fleet)
    return container, scheduler


def test_the_demo_has_replicas_ready_before_the_surge(sqlite_url: str) -> None:
    began = time.monotonic()
    fleet = serving_fleet(load_demo_scenario("autoscale"), today=TODAY)
    container, scheduler = go_live(fleet, sqlite_url)
    try:
        story = SurgeStory(fleet)
        told = story.begin()
        assert "yesterday's surge at 14:00:00 UTC under a reactive scaler: llm-chat:" in told[0]
        while fleet.twin.t < fleet.surge_at + 120:
            fleet.twin.advance_to(fleet.twin.t + 15)
            scheduler.run_due(fleet.twin.t)
            told += story.poll()
        surge = next(line for line in told if "the surge begins" in line)
        assert story.ready_at_surge["llm-chat"] >= 1, told
        chat = fleet.twin.serving.servers["llm-chat"] if fleet.twin.serving else None
        assert chat is not None
        first_today = min(a for a, _ in chat.waits if a >= fleet.surge_at - 300)
        assert first_today >= fleet.surge_at - 60, "a request before the surge would explain the replica"
        with container.uow() as uow:
            actions = list(uow.session.scalars(select(Action).join(Incident).where(
                Incident.family == "autoscale").order_by(Action.id)))
            ahead = [a for a in actions if a.targets == ["deployment/serving/llm-chat"]
                     and a.executed_at is not None and a.executed_at.timestamp() < fleet.surge_at]
            assert ahead and ahead[0].status == ActionStatus.SUCCEEDED, surge
            assert not any(a.targets == ["deployment/serving/llm-code"] for a in actions)  # KEDA owns it
            stamps = [e.ts for e in uow.session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
            assert stamps == sorted(stamps)  # the audit trail's times never go backwards
    finally:
        container.close()
        fleet.stop()
    assert time.monotonic() - began < 60


def test_the_demo_runs_a_replayed_trace_after_its_first_day(sqlite_url: str, tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", [(i * 300.0, 20.0, "M0001") for i in range(2 * 288)])
    scenario = tmp_path / "served.yaml"
    scenario.write_text("name: served\nfleet: {nodes: 2, gpus_per_node: 8}\nduration: 2d\nworkloads: []\n"
                        "serving:\n  replay: {requests: requests.csv, max_replicas: 2}\n")
    fleet = serving_fleet(load_demo_scenario(str(scenario)))
    assert fleet.live_start == fleet.twin.start + 86400 and fleet.twin.t == fleet.live_start
    assert fleet.gpu_budget == 16 and fleet.surge_at == float("inf")  # the fleet's GPUs
    container, scheduler = go_live(fleet, sqlite_url)
    try:
        story = SurgeStory(fleet)
        (told,) = story.begin()
        assert told.startswith("the replayed trace until 00:00:00 UTC under a reactive scaler: 288 requests to 1 "
                               "Deployments, ")
        for _ in range(40):  # ten minutes live: a request every five, learned from the first day
            fleet.twin.advance_to(fleet.twin.t + 15)
            scheduler.run_due(fleet.twin.t)
            story.poll()
        assert story.ready["sd-m0001"] >= 1 and not story.told_surge
        with container.uow() as uow:
            scaled = list(uow.session.scalars(select(Action).where(
                Action.targets == ["deployment/serving/sd-m0001"])))
        assert scaled and all(a.status == ActionStatus.SUCCEEDED for a in scaled)
    finally:
        container.close()
        fleet.stop()
