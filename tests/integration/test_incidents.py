"""Findings become incidents: dedup, merge, flap control, reopen, silences, fleet-wide correlation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from detectors.findings import Finding
from gpuops.errors import Conflict
from gpuops.incidents.lifecycle import transition
from gpuops.incidents.service import IncidentConfig, ingest_findings
from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, FindingRecord, Incident, NodeLease, Silence
from gpuops.wiring import Container

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def finding(host: str, gpu: int | None, kind: str = "xid", *, t: float = 0, severity: str = "critical",
            **evidence: object) -> Finding:
    return Finding(ts=T0 + t, hostname=host, gpu=gpu, uuid=f"GPU-{host}-{gpu}", kind=kind,  # type: ignore[arg-type]
                   severity=severity, score=0.9, detector="test", evidence=dict(evidence))  # type: ignore[arg-type]


def incidents(container: Container) -> list[Incident]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(Incident).order_by(Incident.id)))


def ingest(container: Container, *found: Finding, nodes: int = 16, config: IncidentConfig | None = None) -> None:
    with container.uow() as uow:
        ingest_findings(uow.session, list(found), fleet_nodes=nodes, config=config)
        uow.commit()


def test_hard_signal_opens_at_once_and_repeats_dedup(container: Container) -> None:
    ingest(container, finding("gpu-node-001", 3, xid=79))
    ingest(container, finding("gpu-node-001", 3, xid=79, t=15), finding("gpu-node-001", 3, xid=79, t=30))
    (only,) = incidents(container)
    assert only.status == "open" and only.occurrences == 3 and only.title == "XID 79 on gpu-node-001 GPU 3"


def test_soft_anomaly_needs_repeated_occurrences(container: Container) -> None:
    soft = dict(kind="anomaly", severity="warning")
    ingest(container, finding("gpu-node-002", 1, t=0, **soft))  # type: ignore[arg-type]
    ingest(container, finding("gpu-node-002", 1, t=15, **soft))  # type: ignore[arg-type]
    assert incidents(container) == []
    ingest(container, finding("gpu-node-002", 1, t=30, **soft))  # type: ignore[arg-type]
    assert [i.family for i in incidents(container)] == ["anomaly"]


def test_findings_on_one_node_merge_and_the_harder_signal_names_it(container: Container) -> None:
    ingest(container, *[finding("gpu-node-003", 2, "straggler", t=i, severity="warning") for i in range(3)])
    ingest(container, finding("gpu-node-003", 5, "ecc", t=60))
    (only,) = incidents(container)
    assert only.family == "ecc" and only.scope == "node" and only.severity == "critical"


def test_a_new_fault_on_a_node_whose_soft_incident_went_to_a_human_gets_its_own_incident(
        container: Container) -> None:
    overload = dict(kind="overload", severity="warning", deployment="inference/serve-06", corroborated=True)
    ingest(container, *[finding("gpu-node-012", 0, t=i * 60, **overload) for i in range(3)])  # type: ignore[arg-type]
    (soft,) = incidents(container)
    with container.uow() as uow:
        transition(uow.session, uow.session.get(Incident, soft.id), "escalated", reason="cannot scale out",
                   actor="test", now=datetime.fromtimestamp(T0 + 200, tz=UTC))
        uow.commit()
    ingest(container, finding("gpu-node-012", 0, t=300, **overload))  # type: ignore[arg-type]
    ingest(container, finding("gpu-node-012", 5, "gpu_lost", t=3600))  # the node's GPU 5 falls off the bus
    first, second = incidents(container)
    assert (first.family, first.status, first.occurrences) == ("overload", "escalated", 2)  # its repeat stays
    assert (second.family, second.gpu, second.status) == ("gpu_lost", 5, "open")
    # an escalated hard incident still explains what else its node reports
    ingest(container, *[finding("gpu-node-012", 5, "straggler", t=3700 + i, severity="warning",
                                corroborated=True) for i in range(3)])
    with container.uow() as uow:
        transition(uow.session, uow.session.get(Incident, second.id), "escalated", reason="budget",
                   actor="test", now=datetime.fromtimestamp(T0 + 3800, tz=UTC))
        uow.commit()
    ingest(container, *[finding("gpu-node-012", 5, "straggler", t=3900 + i, severity="warning",
                                corroborated=True) for i in range(3)])
    assert len(incidents(container)) == 2
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(FindingRecord).where(
            FindingRecord.incident_id == second.id, FindingRecord.kind == "straggler")) == 6


def test_resolved_incident_reopens_when_the_fault_recurs(container: Container) -> None:
    ingest(container, finding("gpu-node-004", 0, "row_remap"))
    with container.uow() as uow:
        inc = uow.session.scalars(select(Incident)).one()
        now = datetime.fromtimestamp(T0 + 60, tz=UTC)
        transition(uow.session, inc, "investigating", reason="agent", actor="agent", now=now)
        transition(uow.session, inc, "resolved", reason="fixed", actor="agent", now=now)
        uow.commit()
    ingest(container, finding("gpu-node-004", 0, "row_remap", t=3600))
    (only,) = incidents(container)
    assert only.status == "open" and only.resolved_at is None


def resolve_holding_out(container: Container, node: str, runbook: str) -> None:
    """The one incident resolved by gpuops' `runbook` on `node`, which gpuops still holds out (its lease)."""
    with container.uow() as uow:
        inc = uow.session.scalars(select(Incident)).one()
        now = datetime.fromtimestamp(T0 + 60, tz=UTC)
        transition(uow.session, inc, "investigating", reason="agent", actor="agent", now=now)
        action = Action(incident_id=inc.id, runbook=runbook, targets=[f"node/{node}"], plan_hash="h" * 64,
                        idempotency_key=f"{runbook}-{node}", status="succeeded", executed_at=now)
        uow.session.add(action)
        uow.session.flush()
        uow.session.add(NodeLease(hostname=node, action_id=action.id, reason=runbook, acquired_at=now))
        transition(uow.session, inc, "resolved", reason=f"{runbook}, ticketed", actor="agent", now=now)
        uow.commit()


def test_a_resolved_incident_whose_node_gpuops_holds_out_keeps_its_findings_without_reopening(
        container: Container) -> None:
    ingest(container, finding("gpu-node-004", 0, "row_remap"))
    resolve_holding_out(container, "gpu-node-004", "cordon_node")
    ingest(container, finding("gpu-node-004", 0, "row_remap", t=600))  # the broken GPU goes on reporting
    (only,) = incidents(container)
    assert only.status == "resolved" and only.occurrences == 2
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(FindingRecord).where(
            FindingRecord.incident_id == only.id)) == 2  # kept for probation's checks
        for lease in uow.session.scalars(select(NodeLease)):
            lease.released_at = datetime.fromtimestamp(T0 + 900, tz=UTC)  # gpuops returned the node
        uow.commit()
    ingest(container, finding("gpu-node-004", 0, "row_remap", t=3600))
    (only,) = incidents(container)
    assert only.status == "open"  # back in service and failing again: that is news


def test_a_held_out_gpus_next_symptom_joins_its_incident_and_another_gpu_opens_its_own(
        container: Container) -> None:
    ingest(container, finding("gpu-node-006", 4, "ecc"))  # an SBE storm on GPU 4
    resolve_holding_out(container, "gpu-node-006", "drain_node")
    ingest(container, finding("gpu-node-006", 4, "row_remap", t=2100))  # the same GPU then fails row remapping
    (only,) = incidents(container)
    assert only.family == "ecc" and only.status == "resolved" and only.occurrences == 2
    ingest(container, finding("gpu-node-006", 3, "row_remap", t=2200))  # another GPU of the node: another part
    first, second = incidents(container)
    assert first.id == only.id and (second.family, second.gpu, second.status) == ("row_remap", 3, "open")


def test_symptoms_of_moved_pods_elsewhere_leave_the_incident_on_its_gpu(container: Container) -> None:
    ingest(container, finding("gpu-node-016", 2, "row_remap", job="notebooks/nb-1"))
    resolve_holding_out(container, "gpu-node-016", "drain_node")
    # the drain empties the node's other GPUs (their notebooks' memory gone: the drain's expected effect), and the
    # notebooks start on another node, where their memory on empty GPUs is a soft anomaly of a moved job each
    ingest(container, *[finding("gpu-node-016", g, "anomaly", t=90, severity="warning", job=f"notebooks/nb-{g}")
                        for g in (1, 3)])
    ingest(container, *[finding("gpu-node-009", g, "anomaly", t=120, severity="warning", job=f"notebooks/nb-{g}")
                        for g in (1, 3)])
    (only,) = incidents(container)
    assert (only.scope, only.gpu, only.dedup_key) == ("gpu", 2, "gpu-node-016/2/row_remap")
    ingest(container, finding("gpu-node-016", 2, "row_remap", t=900))  # the same GPU's next remap
    (only,) = incidents(container)  # kept with its incident: no second cordon, drain and ticket
    assert only.status == "resolved"


def test_jobs_hung_by_a_fleet_wide_event_do_not_open_a_second_fleet_incident(container: Container) -> None:
    leaf = ("gpu-node-010", "gpu-node-011", "gpu-node-012")
    ingest(container, *[finding(node, None, "fabric", t=i) for i, node in enumerate(leaf)], nodes=12)
    (fabric,) = [i for i in incidents(container) if i.scope == "fleet"]
    assert fabric.family == "fabric"
    # every job across the leaf switch hangs at its next collective, on the leaf's nodes and on its other nodes
    hung = [finding(node, 0, "hung_job", t=120 + i, severity="critical", job=f"ml/train-{i}", corroborated=True)
            for i, node in enumerate((*leaf, "gpu-node-001"))]
    hung.append(finding("gpu-node-002", 0, "hung_job", t=125, severity="critical", job="ml/train-0",
                        corroborated=True))  # train-0 also runs on gpu-node-002
    ingest(container, *hung, nodes=12)
    assert [i.family for i in incidents(container) if i.scope == "fleet"] == ["fabric"]


def test_a_leak_forecast_watched_for_its_span_opens_an_incident_from_its_single_report(
        container: Container) -> None:
    leak = dict(severity="warning", corroborated=True, signals=["framebuffer_monotone_without_drops", "load_steady"])
    ingest(container, finding("gpu-node-006", 2, "memory_leak", eta_s=13200.0, **leak))  # type: ignore[arg-type]
    ingest(container, finding("gpu-node-007", 2, "memory_leak", eta_s=13200.0, persistent=True,
                              **leak))  # type: ignore[arg-type]
    assert [(i.hostname, i.family) for i in incidents(container)] == [("gpu-node-007", "memory_leak")]


def test_silence_suppresses_new_incidents(container: Container) -> None:
    with container.uow() as uow:
        start = datetime.fromtimestamp(T0 - 60, tz=UTC)
        uow.session.add(Silence(kind="maintenance", hostname="gpu-node-005", starts_at=start,
                                ends_at=start + timedelta(hours=2), reason="firmware upgrade", created_by="ops"))
        uow.commit()
    ingest(container, finding("gpu-node-005", 1, xid=79), finding("gpu-node-006", 1, xid=79))
    status = {i.hostname: i.status for i in incidents(container)}
    assert status == {"gpu-node-005": "suppressed", "gpu-node-006": "open"}


def test_fleet_wide_event_becomes_one_escalated_incident(container: Container) -> None:
    burst = [finding(f"gpu-node-{n:03d}", 0, xid=13, t=n) for n in range(1, 6)]
    ingest(container, *burst, nodes=16)
    all_incidents = incidents(container)
    fleet = [i for i in all_incidents if i.scope == "fleet"]
    assert len(fleet) == 1 and fleet[0].status == "escalated" and fleet[0].hostname is None
    node_level = [i for i in all_incidents if i.scope != "fleet"]
    assert node_level and all(i.status == "suppressed" and i.parent_id == fleet[0].id for i in node_level)
    with container.uow() as uow:
        assert verify_chain(uow.session).ok


def test_a_few_nodes_do_not_make_a_fleet_event(container: Container) -> None:
    ingest(container, *[finding(f"gpu-node-{n:03d}", 0, xid=13, t=n) for n in (1, 2)], nodes=16)
    assert all(i.scope != "fleet" for i in incidents(container))


def test_lifecycle_refuses_impossible_transitions(container: Container) -> None:
    ingest(container, finding("gpu-node-007", 0, xid=79))
    with container.uow() as uow:
        inc = uow.session.scalars(select(Incident)).one()
        with pytest.raises(Conflict, match="cannot go from open to verifying"):
            transition(uow.session, inc, "verifying", reason="x", actor="t", now=datetime.now(tz=UTC))


def test_one_jobs_trouble_on_many_nodes_is_not_a_fleet_event(container: Container) -> None:
    hung = [finding(f"gpu-node-00{n}", g, "hung_job", t=15 * k, severity="warning", job="training/pretrain-00")
            for k in range(4) for n in (1, 2, 3, 4) for g in (0, 1)]
    ingest(container, *hung, nodes=8)
    assert [i for i in incidents(container) if i.scope == "fleet"] == []
    others = [finding(f"gpu-node-00{n}", 0, "hung_job", t=15 * k, severity="warning", job=f"team/job-{n}")
              for k in range(4) for n in (5, 6, 7)]
    ingest(container, *others, nodes=8)  # three more independent jobs: now it is many sources
    assert [i.family for i in incidents(container) if i.scope == "fleet"] == ["hung_job"]


def test_a_jobs_idle_gpus_fold_into_the_hard_incident_that_stopped_it(container: Container) -> None:
    job = "training/pretrain-00"
    ingest(container, finding("gpu-node-003", 2, "gpu_lost", job=job))
    consequences = [finding(host, g, "hung_job", t=15 * k, severity="warning", job=job)
                    for k in range(1, 4) for host in ("gpu-node-001", "gpu-node-002") for g in (0, 1)]
    leak = [finding("gpu-node-001", 5, "memory_leak", t=15 * k, severity="warning", job=job) for k in range(1, 4)]
    ingest(container, *consequences, *leak)
    by_family = {i.family: i for i in incidents(container)}
    assert set(by_family) == {"gpu_lost", "memory_leak"}  # hung GPUs are the lost GPU's consequence, a leak is not
    assert by_family["gpu_lost"].occurrences == 1 + len(consequences)
    assert by_family["memory_leak"].hostname == "gpu-node-001"


def test_a_jobs_episode_is_one_incident_for_all_its_nodes(container: Container) -> None:
    job = "training/vision-ft"
    ingest(container, *[finding("gpu-node-005", 0, "hung_job", t=60 * k, severity="warning", job=job)
                        for k in range(3)])  # reported again while it lasts: it opens on the third report
    ingest(container, finding("gpu-node-006", 0, "hung_job", t=180, severity="warning", job=job))
    (only,) = incidents(container)
    assert only.family == "hung_job" and only.hostname == "gpu-node-005" and only.details["job"] == job
    assert only.occurrences == 2  # the opening report, and the job's other node joined it


def test_a_job_stalled_by_a_failure_gpuops_already_resolved_folds_into_it(container: Container) -> None:
    job = "training/pretrain-00"
    ingest(container, finding("gpu-node-003", 2, "xid", xid=48, job=job))  # critical: a hard incident
    (hard,) = incidents(container)
    with container.uow() as uow:
        row = uow.session.get(Incident, hard.id)
        assert row is not None
        transition(uow.session, row, "resolved", reason="drained", actor="test",
                   now=datetime.fromtimestamp(T0 + 60, tz=UTC))
        uow.commit()
    ingest(container, finding("gpu-node-001", 0, "hung_job", t=120, severity="warning", job=job))
    assert [i.id for i in incidents(container)] == [hard.id]  # the job waits for its pod: a consequence
    ingest(container, *[finding("gpu-node-001", 0, "hung_job", t=3600 + 60 * k, severity="warning", job=job)
                        for k in range(3)])
    assert len(incidents(container)) == 2  # an hour later, and lasting, it is a hang of its own


def _escalate(container: Container, incident_id: int, t: float) -> None:
    with container.uow() as uow:
        row = uow.session.get(Incident, incident_id)
        assert row is not None
        transition(uow.session, row, "escalated", reason="budget", actor="test",
                   now=datetime.fromtimestamp(T0 + t, tz=UTC))
        uow.commit()


@pytest.mark.parametrize(("cause", "explains"), [
    (dict(kind="fabric", gpu=None, condition="link_down", device="mlx5_2", hca=2), True),
    (dict(kind="gpu_lost", gpu=2, silent_s=30.0), True),
    (dict(kind="xid", gpu=2, xid=48), False),
])
def test_a_job_stalled_by_a_lasting_failure_still_on_its_node_folds_into_it_whatever_its_age(
        container: Container, cause: dict[str, object], explains: bool) -> None:
    """A link down that nobody could drain keeps the job's ranks waiting for hours: its hang, reported from
    every node of the job, is that failure's, not a new incident (a restart would land on the same link). A
    double-bit error escalated hours ago stops nothing: a hang then is the job's own."""
    job = "training/pretrain"
    fields = dict(cause)
    kind, gpu = str(fields.pop("kind")), fields.pop("gpu")
    ingest(container, finding("gpu-node-009", gpu, kind, job=job, **fields))  # type: ignore[arg-type]
    (hard,) = incidents(container)
    _escalate(container, hard.id, 60)
    for k in range(4):  # one detection cycle a minute, each reporting the hang from both nodes
        ingest(container, *[finding(host, 0, "hung_job", t=2 * 3600 + 60 * k, severity="warning", job=job,
                                    corroborated=True) for host in ("gpu-node-001", "gpu-node-009")])
    if explains:
        assert [i.id for i in incidents(container)] == [hard.id]
        assert incidents(container)[0].occurrences >= 1 + 6  # the stall's reports are the failure's
    else:
        assert [i.family for i in incidents(container)] == [kind, "hung_job"]


def test_a_persistent_soft_finding_no_second_signal_agrees_with_opens_nothing(container: Container) -> None:
    lone = dict(kind="thermal", severity="warning", corroborated=False, signals=[])
    ingest(container, *[finding("gpu-node-002", 1, t=15 * i, **lone) for i in range(8)])  # type: ignore[arg-type]
    assert incidents(container) == []
    agreed = dict(kind="thermal", severity="warning", corroborated=True, signals=["thermal_violation"])
    ingest(container, *[finding("gpu-node-002", 1, t=200 + 15 * i, **agreed) for i in range(3)])  # type: ignore[arg-type]
    assert [i.family for i in incidents(container)] == ["thermal"]


def test_suspicions_on_many_nodes_are_no_fleet_event(container: Container) -> None:
    lone = dict(kind="thermal", severity="warning", corroborated=False)
    ingest(container, *[finding(f"gpu-node-{n:03d}", 0, t=n + 15 * i, **lone)  # type: ignore[arg-type]
                        for n in range(1, 8) for i in range(3)], nodes=16)
    assert incidents(container) == []


def test_whole_nodes_falling_silent_on_many_nodes_is_no_fleet_event(container: Container) -> None:
    # scrape gaps and exporter restarts: each node's exporter quiet for a while, a suspicion of a hard kind
    silent = dict(kind="gpu_lost", severity="warning", corroborated=False, signals=[], all_gpus=8)
    ingest(container, *[finding(f"gpu-node-{n:03d}", None, t=60 * n, **silent)  # type: ignore[arg-type]
                        for n in range(1, 8)], nodes=16)
    assert [i for i in incidents(container) if i.scope == "fleet"] == []
    lost = [finding(f"gpu-node-{n:03d}", 0, "gpu_lost", t=500 + n) for n in range(1, 6)]  # GPUs really gone
    ingest(container, *lost, nodes=16)
    assert [i.family for i in incidents(container) if i.scope == "fleet"] == ["gpu_lost"]


def test_a_fleet_event_that_goes_on_stays_one_incident(container: Container) -> None:
    ingest(container, *[finding(f"gpu-node-{n:03d}", 0, xid=13, t=n) for n in range(1, 6)], nodes=16)
    # twenty minutes later, past the correlation window, more nodes report the same event
    ingest(container, *[finding(f"gpu-node-{n:03d}", 0, xid=13, t=1200 + n) for n in range(6, 9)], nodes=16)
    tops = [i for i in incidents(container) if i.parent_id is None]
    assert [(i.scope, i.family) for i in tops] == [("fleet", "xid")]
    assert tops[0].details["hosts"] == [f"gpu-node-{n:03d}" for n in range(1, 9)]


def test_the_effects_of_gpuops_own_reboot_are_attributed_not_new_incidents(container: Container) -> None:
    from gpuops.store.models import Action, FindingRecord

    ingest(container, finding("gpu-node-003", 2, xid=79))
    with container.uow() as uow:
        inc = uow.session.scalars(select(Incident)).one()
        uow.session.add(Action(incident_id=inc.id, runbook="reboot_node", targets=["node/gpu-node-003"],
                               plan_hash="h" * 64, idempotency_key="reboot-3", status="succeeded",
                               executed_at=datetime.fromtimestamp(T0 + 600, tz=UTC)))
        transition(uow.session, inc, "investigating", reason="agent", actor="agent",
                   now=datetime.fromtimestamp(T0 + 60, tz=UTC))
        transition(uow.session, inc, "resolved", reason="rebooted", actor="agent",
                   now=datetime.fromtimestamp(T0 + 700, tz=UTC))
        uow.commit()
    ingest(container, finding("gpu-node-003", None, "node_not_ready", t=720),
           *[finding("gpu-node-003", g, "gpu_lost", t=720) for g in range(8)])
    (only,) = incidents(container)
    assert only.status == "resolved" and only.details["expected_effects"] == {"node_not_ready": 1, "gpu_lost": 8}
    with container.uow() as uow:
        held = uow.session.scalars(select(FindingRecord.incident_id)).all()
    assert set(held) == {only.id}
    # an hour later the same signal is news: the node fell again
    ingest(container, finding("gpu-node-003", None, "node_not_ready", t=600 + 3600))
    assert [i.family for i in incidents(container)] == ["xid", "node_not_ready"]
