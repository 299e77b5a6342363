"""The demo's story as test data: a 24-GPU training job (8 GPUs on each of three nodes) whose worker on
gpu-node-003 loses GPU 2 (XID 79); telemetry of the three nodes around it; and an incident with the rules
planner's whole plan (cordon, drain, reboot), the cordon awaiting approval and the finding repeated many times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from detectors.frame import FleetFrame, GpuLabels
from gpuops.store.models import Action, FindingRecord, Incident, IncidentEvent
from gpuops.wiring import Container
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION
from tests.runbook_twin import Twin, deployment

NODES = ("gpu-node-002", "gpu-node-003", "gpu-node-004")
HOST, GPU = "gpu-node-003", 2
STEP = 15.0


def training_twin() -> Twin:
    """Three 8-GPU nodes, one 8-GPU worker of job training/pretrain on each."""
    twin = Twin().start()
    for name in NODES:
        twin.state.add_node(name, 8)
    twin.state.add_deployment(deployment("pretrain", 3, 8, namespace="training",
                                         **{CHECKPOINT_SECONDS_ANNOTATION: "45"}))
    return twin


def story_frame(opened: datetime, *, before: timedelta = timedelta(hours=1),
                after: timedelta = timedelta(minutes=40)) -> FleetFrame:
    """Every GPU of the three nodes at 15 s steps: GPU 2 of gpu-node-003 reports XID 79 when the incident opens,
    then its temperature and utilisation drop off (the GPU fell off the bus)."""
    stamps = np.arange((opened - before).timestamp(), (opened + after).timestamp(), STEP)
    rows = [(host, gpu) for host in NODES for gpu in range(8)]
    fault = stamps >= opened.timestamp()
    temp = np.array([60.0 + 2 * (i % 3) + np.sin(stamps / 300.0) for i in range(len(rows))])
    util = np.full((len(rows), len(stamps)), 95.0)
    xid = np.zeros((len(rows), len(stamps)))
    faulty = rows.index((HOST, GPU))
    temp[faulty, fault] = np.nan
    util[faulty, fault] = 0.0
    xid[faulty, fault] = 79.0
    labels = GpuLabels(hostname=tuple(h for h, _ in rows), gpu=tuple(g for _, g in rows),
                       uuid=tuple(f"GPU-{h}-{g}" for h, g in rows), model_name=("H100 80GB",) * len(rows),
                       pod=tuple(f"pretrain-worker-{NODES.index(h)}" for h, _ in rows),
                       namespace=("training",) * len(rows), container=("main",) * len(rows))
    return FleetFrame(stamps, labels, {"DCGM_FI_DEV_GPU_TEMP": temp, "DCGM_FI_DEV_GPU_UTIL": util,
                                       "DCGM_FI_DEV_XID_ERRORS": xid,
                                       "DCGM_FI_DEV_POWER_USAGE": np.full((len(rows), len(stamps)), 600.0)})


PLAN = [{"runbook": r, "params": {"reason": "gpuops incident: GPU 2 fell off the bus"}, "targets": [f"node/{HOST}"]}
        for r in ("cordon_node", "drain_node", "reboot_node")]


def seed_story(container: Container, opened: datetime, *, repeats: int = 37) -> tuple[int, int]:
    """The incident as the agent leaves it after planning: (incident id, the cordon's action id)."""
    with container.uow() as uow:
        incident = Incident(dedup_key=f"{HOST}/{GPU}/gpu_lost/{opened.timestamp()}", scope="gpu", family="gpu_lost",
                            hostname=HOST, gpu=GPU, severity="critical", title=f"gpu lost on {HOST} GPU {GPU}",
                            status="awaiting_approval", opened_at=opened, updated_at=opened,
                            summary="GPU 2 stopped answering: last_seen=" f"{opened.timestamp() - 30}, "
                                    "row_in_frame=True")
        uow.session.add(incident)
        uow.flush()
        for n in range(repeats):
            uow.session.add(FindingRecord(ts=opened + timedelta(seconds=30 * n), hostname=HOST, gpu=GPU,
                                          uuid=f"GPU-{HOST}-{GPU}", kind="gpu_lost", severity="critical", score=1.0,
                                          detector="rules.gpu_lost", incident_id=incident.id,
                                          evidence={"xid": 79, "last_seen": opened.timestamp() - 30,
                                                    "row_in_frame": True}))
        uow.session.add(IncidentEvent(incident_id=incident.id, ts=opened + timedelta(seconds=40), kind="agent.plan",
                                      message="gpu_lost incident classified as xid79: cordon_node → drain_node → "
                                              "reboot_node.",
                                      data={"planner": "rules", "fault": "xid79", "actions": PLAN}))
        cordon = Action(incident_id=incident.id, runbook="cordon_node", targets=[f"node/{HOST}"],
                        parameters=PLAN[0]["params"], plan_hash="a" * 64, idempotency_key=f"story-{incident.id}-0",
                        status="awaiting_approval", approvals_required=1, risk="low",
                        created_at=opened + timedelta(seconds=45), updated_at=opened + timedelta(seconds=45),
                        diff={"changes": [f"cordon {HOST}"], "pods_affected": [], "gpus_affected": 7,
                              "gpu_hours_at_risk": 0.0, "blockers": []},
                        verdict={"gate": "one_approver", "reasons": ["within budgets: nodes_out_limit=2"],
                                 "budget": {}})
        uow.session.add(cordon)
        uow.commit()
        return incident.id, cordon.id


def at(minutes: float, opened: datetime) -> datetime:
    return opened + timedelta(minutes=minutes)


OPENED = datetime(2026, 12, 4, 14, 2, tzinfo=UTC)
