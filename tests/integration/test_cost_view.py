"""The cost view end to end: detection cycles over in-memory telemetry record each GPU's allocation and utilisation
in the real store (an hour idle is listed, a checkpoint's pause is not, a missing sample is unknown, a deployment's
GPU-hours provisioned and needed add up once); a cordon run through proposal, approval and execution against the
Kubernetes twin is lost GPU-hours; the /cost page draws it, /api/cost needs a user, /metrics carries the gauges."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import delete

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.telemetry import InMemoryTelemetry
from detectors.frame import FleetFrame, GpuLabels
from domain import clock
from gpuops.config import Settings
from gpuops.cost.recording import UsageSettings, record_usage
from gpuops.cost.view import Pricing, cost_view
from gpuops.execution.approvals import Approver, decide
from gpuops.execution.service import ExecutionDeps, Proposal, execute, propose
from gpuops.pipeline import Pipeline, Step
from gpuops.policy import PolicyConfig
from gpuops.store import migrate
from gpuops.store.models import Action, GpuHours, GpuUsage, Incident
from gpuops.wiring import Container, bootstrap
from runbooks import Plan, Target, default_catalogue
from tests.runbook_twin import FAST, START, Twin, connect
from tests.web_server import PASSWORDS, serve, sign_in, web_container

STEP, WINDOW, CYCLE = 30.0, 900.0, 300.0
T0 = START - 5400.0  # telemetry from 90 minutes before the twin's start
LLAMA = ("llama-7b-5d8f9c7b6d-x2k4q", "llama-7b-5d8f9c7b6d-p7w2z")


@dataclass
class NoSteps:
    """The pipeline's dispatcher: what a cycle hands on is not what these tests look at."""

    steps: list[Step] = field(default_factory=list)

    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        self.steps.append(step)


def fleet(*, with_gap: bool) -> tuple[FleetFrame, np.ndarray]:
    """Two nodes of four GPUs. gpu-node-001: GPU 0 a notebook at 1 % all along; 1 and 2 two replicas of llama-7b
    (60 % with a 10-minute pause, and 20 %); 3 a trainer at 1 % whose last sample is missing when `with_gap`.
    gpu-node-002: nothing bound, 0 %."""
    ts = np.arange(T0, START + 1, STEP)
    n = len(ts)
    util = np.vstack([np.full(n, 1.0), np.full(n, 60.0), np.full(n, 20.0), np.full(n, 1.0), np.zeros((4, n))])
    util[1, 80:100] = 0.0
    if with_gap:
        util[3, -1] = np.nan
    labels = GpuLabels(hostname=("gpu-node-001",) * 4 + ("gpu-node-002",) * 4, gpu=(0, 1, 2, 3) * 2,
                       uuid=tuple(f"GPU-{i}" for i in range(8)), model_name=("NVIDIA H100 80GB HBM3",) * 8,
                       pod=("jupyter-alice-0", *LLAMA, "trainer-0", "", "", "", ""),
                       namespace=("notebooks", "serving", "serving", "training", "", "", "", ""))
    return FleetFrame(ts, labels, {"DCGM_FI_DEV_GPU_UTIL": util}), util


def run_cycles(container: Container) -> None:
    pipeline = Pipeline(container, NoSteps(), clock=lambda: START)
    for end in np.arange(T0 + WINDOW, START + 1, CYCLE):
        assert pipeline.detection_cycle(shard=0, shards=1, end=float(end)).ran


def test_cycles_list_the_idle_hour_not_the_pause_nor_the_gpu_without_samples(db_url: str) -> None:
    migrate.upgrade(db_url)
    frame, util = fleet(with_gap=True)
    container = bootstrap(Settings(database_url=db_url, step_seconds=STEP, window_seconds=WINDOW),
                          telemetry=InMemoryTelemetry(frame))
    try:
        run_cycles(container)
        with container.uow() as uow:  # the whole window again, as an overlapping window would bring it: no change
            record_usage(uow.session, frame, UsageSettings(threshold_percent=5.0, step_s=STEP, max_gap_s=3 * STEP))
            uow.commit()
        with container.session_factory() as session:
            view = cost_view(session, now=datetime.fromtimestamp(START, tz=UTC), idle_after_s=3600,
                             pricing=Pricing(12.29, (("H100", 10.0),)))
            days = {(r.day, r.deployment): r.provisioned_s for r in session.query(GpuHours)}
            hours: dict[tuple[str, str], tuple[float, float]] = {}
            for r in session.query(GpuHours):  # summed over UTC days: the telemetry crosses midnight
                before = hours.get((r.namespace, r.deployment), (0.0, 0.0))
                hours[(r.namespace, r.deployment)] = (before[0] + r.provisioned_s, before[1] + r.busy_s)
    finally:
        container.close()
    idle = view["idle"]["gpus"]
    assert [(g["hostname"], g["gpu"], g["namespace"], g["pod"]) for g in idle] == [
        ("gpu-node-001", 0, "notebooks", "jupyter-alice-0")]
    assert idle[0]["idle_since"] == datetime.fromtimestamp(T0, tz=UTC).isoformat()
    assert idle[0]["idle_hours"] == 1.5 and idle[0]["cost"] == 15.0 and idle[0]["price_per_hour"] == 10.0
    assert view["gpu_states"] == {"low": 1, "busy": 2, "unknown": 1, "free": 4}
    samples = len(frame.timestamps)
    assert hours[("serving", "llama-7b")][0] == pytest.approx(2 * samples * STEP)
    assert hours[("serving", "llama-7b")][1] == pytest.approx((util[1].sum() + util[2].sum()) / 100 * STEP)
    assert days[("2026-01-01", "llama-7b")] == 2 * STEP  # one sample per replica at midnight, the rest the day before
    assert hours[("training", "trainer")][0] == pytest.approx((samples - 1) * STEP)  # the missing sample: neither
    row = next(r for r in view["deployments"]["rows"] if r["deployment"] == "llama-7b")
    assert row["utilisation"] == pytest.approx(row["needed_gpu_hours"] / row["provisioned_gpu_hours"], abs=1e-3)


@pytest.fixture
def twin() -> Iterator[Twin]:
    twin = Twin().start()
    for i in range(1, 11):  # room in the budgets for one node out
        twin.state.add_node(f"gpu-node-{i:03d}", 4)
    try:
        yield twin
    finally:
        twin.stop()


def cordoned_for_two_hours(container: Container, twin: Twin) -> int:
    """An ECC incident on gpu-node-001 whose cordon is proposed, approved and executed through the execution
    service against the twin (which takes the node lease); then two hours pass. Returns the incident."""
    cluster: KubernetesCluster = connect(twin)
    deps = ExecutionDeps(catalogue=default_catalogue(FAST), cluster=cluster, runbook_settings=FAST,
                         policy=PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=0.5), clock=twin.clock,
                         sleep=twin.sleep, worker="test-worker")
    now = datetime.fromtimestamp(twin.clock(), tz=UTC)
    try:
        with container.uow() as uow:
            incident = Incident(dedup_key="gpu-node-001//ecc", scope="node", family="ecc", hostname="gpu-node-001",
                                severity="critical", title="DBE storm", status="investigating", opened_at=now,
                                updated_at=now)
            uow.session.add(incident)
            uow.commit()
            incident_id = incident.id
        plan = Plan("cordon_node", {"reason": "ECC errors"}, (Target.for_node("gpu-node-001"),))
        with container.uow() as uow:
            proposed = propose(uow, proposal=Proposal(incident_id, plan, "DBE count rose", "rules"), deps=deps)
            uow.commit()
        assert proposed.action_id is not None
        with container.uow() as uow:
            action = uow.session.get(Action, proposed.action_id)
            assert action is not None
            decide(uow.session, action_id=action.id, approver=Approver("april", "dashboard", True),
                   decision="approve", plan_hash=action.plan_hash, reason="ok", now=now,
                   ttl_s=600).raise_for_refusal()
            uow.commit()
        assert execute(container.uow, action_id=proposed.action_id, deps=deps, dry_run=False).status == "succeeded"
    finally:
        cluster.close()
    twin.clock.t += 7200
    return incident_id


def test_the_cost_page_api_and_metrics_show_idle_gpus_deployments_and_lost_hours(sqlite_url: str,
                                                                                   twin: Twin) -> None:
    frame, _ = fleet(with_gap=False)
    container = web_container(sqlite_url, step_seconds=STEP, window_seconds=WINDOW, gpu_hour_price=2.5)
    container._telemetry = InMemoryTelemetry(frame)
    with clock.using(twin.clock):
        run_cycles(container)
        incident_id = cordoned_for_two_hours(container, twin)
        with container.uow() as uow:  # a GPU lost for half an hour that no runbook acted on
            opened = datetime.fromtimestamp(twin.clock(), tz=UTC) - timedelta(hours=1)
            uow.session.add(Incident(dedup_key="gpu-node-002/1/gpu_lost", scope="gpu", family="gpu_lost",
                                     hostname="gpu-node-002", gpu=1, severity="critical", title="GPU fell off the bus",
                                     status="resolved", opened_at=opened, updated_at=opened,
                                     resolved_at=opened + timedelta(minutes=30)))
            uow.commit()
        with serve(container) as web:
            assert httpx.get(f"{web.url}/api/cost").status_code == 401
            api = httpx.get(f"{web.url}/api/cost", auth=("vera", PASSWORDS["vera"])).json()
            refused = httpx.get(f"{web.url}/api/cost?days=0", auth=("vera", PASSWORDS["vera"]))
            with sign_in(web.url, "vera") as client:
                page = client.get("/cost")
                nav = client.get("/fleet").text
            metrics = httpx.get(f"{web.url}/metrics").text
    container.close()

    assert refused.status_code == 422 and "days" in refused.text
    assert api["losses"]["by_runbook"] == {"cordon_node": 8.0, "none": 0.5}  # 4 GPUs × 2 h; 1 GPU × 30 min
    assert api["losses"]["by_week"] == {"2026-W01": 8.5}
    assert api["losses"]["incidents"][0]["incident_id"] == incident_id
    assert api["losses"]["gpu_hours_saved"] is None and "evaluation" in api["losses"]["saved_note"]
    assert [g["pod"] for g in api["idle"]["gpus"]] == ["jupyter-alice-0", "trainer-0"]  # both 1.5 h at 1 %
    assert api["idle"]["by_namespace"] == {"notebooks": {"gpus": 1, "cost": 3.75, "per_hour": 2.5},
                                           "training": {"gpus": 1, "cost": 3.75, "per_hour": 2.5}}
    assert api["idle"]["cost_per_hour"] == 5.0

    assert page.status_code == 200
    html = page.text
    assert html.count('class="chart bar-chart"') == 5
    assert "jupyter-alice-0" in html and "$2.50 per GPU-hour" in html and "$5.00</strong> per hour" in html
    assert "needed = the GPU-hours the deployment&#39;s GPUs were busy" in html
    for label in ("serving/llama-7b", "cordon_node", "2026-W01", f"#{incident_id} DBE storm"):
        assert label in html, label
    assert re.search(r'class="bar-value">8\.0<', html) and re.search(r'class="bar-value">3\.75<', html)
    assert '<a href="/cost">Cost</a>' in nav

    assert 'gpuops_gpus_idle{namespace="notebooks"} 1.0' in metrics
    assert 'gpuops_gpu_idle_cost_per_hour{namespace="notebooks"} 2.5' in metrics
    assert 'gpuops_gpu_hours_lost_total{runbook="cordon_node"} 8.0' in metrics
    assert re.search(r'gpuops_gpu_hours_provisioned_total\{deployment="llama-7b",namespace="serving"\} 3\.0', metrics)
    assert 'gpuops_gpu_hours_needed_total{deployment="llama-7b",namespace="serving"}' in metrics
    assert 'gpuops_gpus_by_state{state="free"} 4.0' in metrics


def test_a_gpu_gone_from_its_shards_frame_is_unknown_and_another_shards_gpus_are_left_alone(db_url: str) -> None:
    migrate.upgrade(db_url)
    frame, _ = fleet(with_gap=False)
    first = frame.until(T0 + 3600)
    later = frame.rows(np.array([h == "gpu-node-001" for h in frame.gpus.hostname]))
    usage = UsageSettings(threshold_percent=5.0, step_s=STEP, max_gap_s=3 * STEP)
    container = bootstrap(Settings(database_url=db_url))
    try:
        for owns in (lambda host: host == "gpu-node-001", lambda host: True):
            with container.uow() as uow:
                uow.session.execute(delete(GpuUsage))
                record_usage(uow.session, first, usage)
                record_usage(uow.session, later, usage, owns=owns)
                uow.commit()
            with container.session_factory() as session:
                states = {(r.hostname, r.gpu): (r.state, r.seen_at) for r in session.query(GpuUsage)}
            node2 = {v for k, v in states.items() if k[0] == "gpu-node-002"}
            if owns("gpu-node-002"):
                assert node2 == {("unknown", datetime.fromtimestamp(START, tz=UTC))}
            else:  # another shard's GPUs: as that shard last wrote them
                assert node2 == {("free", datetime.fromtimestamp(T0 + 3600, tz=UTC))}
            assert states[("gpu-node-001", 0)] == ("low", datetime.fromtimestamp(START, tz=UTC))
    finally:
        container.close()
