"""`gpuops demo --scenario autoscale`, driven step by step: the bundled scenario's yesterday under a reactive
scaler, then today through the embedded scheduler's autoscaling step on the twin's Kubernetes API and /metrics.
gpuops learns the daily surge from yesterday and has a replica of llm-chat Ready before today's first request of
it; the story says so, and the scale actions are on the store's autoscaling incident."""

from __future__ import annotations

import time

from sqlalchemy import select

from domain import ActionStatus
from entrypoints.worker.embedded import EmbeddedScheduler
from evaluation.demo import SurgeStory, attach_autoscaler, load_demo_scenario, serving_fleet
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import bootstrap
from simulator.server import serve_twin

TODAY = 1_796_000_000.0  # a fixed day, so the run is the same every time


def test_the_demo_has_replicas_ready_before_the_surge(sqlite_url: str) -> None:
    began = time.monotonic()
    fleet = serving_fleet(load_demo_scenario("autoscale"), today=TODAY)
    fleet.served = serve_twin(fleet.twin)
    fleet.demand.urls = [f"{fleet.served.url}/metrics"]
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url, kube_api_url=fleet.served.url, kube_verify_ssl=False,
                                   dry_run=False, scrape_urls=(f"{fleet.served.url}/metrics",), cycle_seconds=3600))
    try:
        scheduler = EmbeddedScheduler(container, clock=lambda: fleet.twin.t)
        scheduler.autoscale = attach_autoscaler(scheduler.pipeline, container, fleet)
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
