"""Embedded mode: the same pipeline steps run in order in one process on SQLite; cycles open incidents, which
flow on to the incident update and the agent step; a poison message is dead-lettered; settings keep the
broker's visibility timeout above every task's time limit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from entrypoints.worker import create_app
from entrypoints.worker.app import cycle_end, visibility_timeout
from entrypoints.worker.embedded import EmbeddedScheduler
from gpuops.config import Settings
from gpuops.pipeline import Step
from gpuops.store import migrate
from gpuops.store.models import DeadLetter, DetectorState, Incident
from gpuops.wiring import bootstrap
from tests.agent.helpers import mark_examined
from tests.conftest import free_port
from tests.worker_wiring import synthetic_telemetry

NOW = 1_767_225_600.0  # a multiple of 30 s


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedScheduler]:
    url = f"sqlite:///{tmp_path / 'gpuops.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, step_seconds=15.0, cycle_seconds=30.0, shards=2)
    telemetry = synthetic_telemetry(4, step_s=15.0, lost_rows=(12,), start=NOW)
    container = bootstrap(settings, telemetry=telemetry)
    try:
        yield EmbeddedScheduler(container, clock=lambda: NOW)
    finally:
        container.close()


def test_embedded_cycles_open_incidents_once_per_cycle(embedded: EmbeddedScheduler) -> None:
    c = embedded.pipeline.container
    for k in range(12):
        embedded.run_due(NOW + 30.0 * k + 3.0)
        embedded.run_due(NOW + 30.0 * k + 4.0)  # same cycle again: no new detect round
    with c.uow() as uow:
        states = {s.shard: (s.cycles, s.last_ts) for s in uow.session.scalars(select(DetectorState))}
        lost = [(i.hostname, i.gpu) for i in uow.session.scalars(select(Incident)) if i.family == "gpu_lost"]
    assert states == {"0/2": (12, NOW + 330.0), "1/2": (12, NOW + 330.0)}
    assert lost == [("gpu-node-002", 4)]
    ran = [step for step, _ in embedded.dispatcher.ran]
    assert ran.count(Step.DETECT) == 24 and Step.INCIDENT_CHANGED in ran and Step.AGENT_STEP in ran


def test_a_poison_message_is_dead_lettered_not_raised(embedded: EmbeddedScheduler) -> None:
    container = embedded.pipeline.container
    app = create_app(container.settings, wiring=lambda _s: container)
    result = app.tasks["gpuops.detect"].apply(kwargs={"shard": "0; drop table", "shards": 1, "end": NOW})
    assert result.successful() and result.result["dead_letter"] == "invalid_payload"
    out_of_range = app.tasks["gpuops.detect"].apply(kwargs={"shard": 3, "shards": 2, "end": NOW})
    assert out_of_range.result["dead_letter"] == "invalid_payload"
    with container.uow() as uow:
        letters = list(uow.session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
        assert uow.session.scalar(select(func.count()).select_from(DetectorState)) == 0
    assert [(d.task, d.reason) for d in letters] == [("gpuops.detect", "invalid_payload")] * 2
    assert "shard" in letters[0].error and letters[0].payload["kwargs"]["shard"] == "0; drop table"


def test_visibility_timeout_outlasts_every_time_limit() -> None:
    settings = Settings(claim_ttl_seconds=1800.0, cycle_seconds=30.0)
    app = create_app(settings, wiring=lambda s: bootstrap(s))
    limits = [t.time_limit for name, t in app.tasks.items() if name.startswith("gpuops.")]
    assert len(limits) == len(Step) and visibility_timeout(settings) > max(limits)
    assert all(t.acks_late and t.reject_on_worker_lost for n, t in app.tasks.items() if n.startswith("gpuops."))
    assert cycle_end(NOW + 29.9, 30.0) == NOW and cycle_end(NOW + 30.0, 30.0) == NOW + 30.0


def test_the_sweep_resumes_incidents_whose_soak_is_over(embedded: EmbeddedScheduler) -> None:
    c = embedded.pipeline.container
    base = NOW - 300.0  # the sweep compares holds with the scheduler's clock to find stale ones
    at = datetime.fromtimestamp(base, tz=UTC)
    with c.uow() as uow:
        for gpu, held in ((0, base + 180.0), (1, base + 600.0)):
            uow.session.add(Incident(dedup_key=f"gpu-node-001/{gpu}/xid", scope="gpu", family="xid",
                                     hostname="gpu-node-001", gpu=gpu, status="investigating", severity="critical",
                                     title="XID 79", opened_at=at, updated_at=at,
                                     held_until=datetime.fromtimestamp(held, tz=UTC)))
        mark_examined(uow.session, base + 300.0, shard=0, shards=2)
        uow.commit()
    assert embedded.pipeline.sweep().resumed == []  # shard 1 has examined nothing yet
    with c.uow() as uow:
        mark_examined(uow.session, base + 240.0, shard=1, shards=2)
        uow.commit()
    with c.uow() as uow:
        first = uow.session.scalars(select(Incident.id).where(Incident.gpu == 0)).one()
    assert embedded.pipeline.sweep().resumed == [first]
    assert (Step.AGENT_STEP, {"incident_id": first, "decision": {"hold": "over"}}) in embedded.dispatcher.queued()
    assert Step.SWEEP.value in embedded.run_due(NOW + 1.0)


def test_a_prometheus_that_is_down_costs_one_line_a_cycle_and_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens where Prometheus should be: each cycle logs why in one line (no traceback every 30 s),
    stores no detector state and dead-letters nothing, and the next cycle tries again."""
    url = f"sqlite:///{tmp_path / 'gpuops.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, prometheus_url=f"http://127.0.0.1:{free_port()}", cycle_seconds=30.0)
    container = bootstrap(settings)
    try:
        scheduler = EmbeddedScheduler(container, clock=lambda: NOW)
        with caplog.at_level("ERROR", logger="entrypoints.worker.embedded"):
            scheduler.run_due(NOW + 3.0)
            scheduler.run_due(NOW + 33.0)
        failed = [r for r in caplog.records if r.getMessage().startswith("embedded step failed")]
        assert len(failed) == 2 and all(r.exc_info is None for r in failed), failed
        assert "cannot reach Prometheus" in failed[0].getMessage()
        with container.uow() as uow:
            assert uow.session.scalar(select(func.count()).select_from(DetectorState)) == 0
            assert uow.session.scalar(select(func.count()).select_from(DeadLetter)) == 0
    finally:
        container.close()
