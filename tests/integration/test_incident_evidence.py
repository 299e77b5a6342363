"""Evidence kept with an incident, on the real PostgreSQL: a snapshot of the node's telemetry (downsampled, XID
codes kept) and of its workload (read through the real Kubernetes client from the twin's API) when the incident
opens and after each executed action; the incident's charts and blast radius come from them once the live source
has forgotten the node and the job has moved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.telemetry import TelemetryError
from connectors.telemetry.fake import InMemoryTelemetry
from entrypoints.web.incident_charts import incident_charts
from gpuops.config import Settings
from gpuops.incidents.evidence import MAX_POINTS, EvidenceSources, downsample, keep_evidence, merged_series, snapshots
from gpuops.store.models import Action, Incident
from gpuops.wiring import Container, bootstrap
from runbooks.blast import Workload, step_blast_radius
from runbooks.settings import RunbookSettings
from tests.incident_story import GPU, HOST, OPENED, seed_story, story_frame, training_twin
from tests.runbook_twin import Twin, connected, running
from tests.web_server import web_container

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def twin() -> Iterator[Twin]:
    with running(training_twin()) as twin:
        yield twin


@pytest.fixture
def cluster(twin: Twin) -> Iterator[KubernetesCluster]:
    with connected(twin) as cluster:
        yield cluster


@pytest.fixture
def container(postgres_url: str) -> Iterator[Container]:
    container = web_container(postgres_url)
    try:
        yield container
    finally:
        container.close()


def test_downsampling_bounds_the_points_and_keeps_every_xid() -> None:
    stamps = [float(t) for t in range(1000)]
    values = [0.0] * 1000
    values[501] = 79.0
    t, peak = downsample(stamps, values, 100, peak=True)
    assert len(t) == len(peak) == 100 and 79.0 in peak and t[-1] == 999.0
    _, mean = downsample(stamps, [float(v) for v in range(1000)], 10)
    assert mean[0] == pytest.approx(49.5)
    with pytest.raises(ValueError, match="timestamps but"):
        downsample([1.0], [1.0, 2.0], 10)


def test_snapshots_at_open_and_after_each_step_outlive_the_source(container: Container, cluster: KubernetesCluster,
                                                                  postgres_url: str) -> None:
    incident_id, cordon_id = seed_story(container, OPENED)
    telemetry = InMemoryTelemetry(story_frame(OPENED))
    settings = RunbookSettings()
    sources = EvidenceSources(telemetry=telemetry, cluster=cluster, runbook_settings=settings, step_s=15.0)
    with container.uow() as uow:
        assert keep_evidence(uow.session, incident_id=incident_id, sources=sources,
                             now=OPENED + timedelta(minutes=2)) == ["opened"]
        uow.commit()
    with container.session_factory() as session:
        (opened,) = snapshots(session, incident_id)
        assert opened.window_start == OPENED - timedelta(minutes=30)
        series = opened.series
        assert len(series["t"]) <= MAX_POINTS
        roles = {key: info["role"] for key, info in series["gpus"].items()}
        assert roles[f"{HOST}/{GPU}"] == "faulty"
        assert sum(r == "node" for r in roles.values()) == 7
        assert sum(r == "job" for r in roles.values()) == 8  # bounded: 16 GPUs of the job elsewhere, 8 kept
        assert 79.0 in series["gpus"][f"{HOST}/{GPU}"]["metrics"]["DCGM_FI_DEV_XID_ERRORS"]
        workload = Workload.from_json(opened.workload)
        assert [p.job for p in workload.pods] == ["training/pretrain"]
        blast = step_blast_radius("drain_node", workload, settings)
        assert blast.jobs[0].gpus_total == 24 and len(blast.jobs[0].nodes) == 3

    # the cordon runs; six minutes later the drain; each leaves a snapshot starting where the last one ended
    with container.uow() as uow:
        cordon = uow.session.get(Action, cordon_id)
        assert cordon is not None
        cordon.status, cordon.executed_at = "succeeded", OPENED + timedelta(minutes=3)
        uow.commit()
    with container.uow() as uow:
        taken = keep_evidence(uow.session, incident_id=incident_id, sources=sources,
                              now=OPENED + timedelta(minutes=9))
        assert taken == [f"action-{cordon_id}"]
        assert keep_evidence(uow.session, incident_id=incident_id, sources=sources,
                             now=OPENED + timedelta(minutes=10)) == []  # nothing missing: nothing taken
        uow.commit()
    with container.session_factory() as session:
        first, second = snapshots(session, incident_id)
        assert second.window_start == first.window_end and second.window_end == OPENED + timedelta(minutes=9)
        merged = merged_series([first.series, second.series])
        assert merged["t"] == sorted(set(merged["t"]))
        assert all(len(c) == len(merged["t"]) for info in merged["gpus"].values() for c in info["metrics"].values())

        # the source forgot everything: the page still draws from what was kept
        telemetry.fail_with = TelemetryError("the query window is older than the retention")
        incident = session.get(Incident, incident_id)
        assert incident is not None
        forgetful = bootstrap(Settings(database_url=postgres_url), telemetry=telemetry)
        try:
            drawn = incident_charts(forgetful, incident, OPENED + timedelta(minutes=15),
                                    snapshots(session, incident_id))
        finally:
            forgetful.close()
        assert drawn.note == "" and "kept with the incident (2 snapshots)" in drawn.source
        assert "retention" in drawn.source
        text = "".join(drawn.charts)
        assert "GPU temperature (°C)" in text and "XID 79 on GPU 2" in text
        assert "node peers (median of 7)" in text and "same job, other nodes (median of 8)" in text

