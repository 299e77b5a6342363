"""The whole loop on one scenario, at high speed and in simulated time.

The twin is stepped in process and sampled into FleetFrames (the shape the telemetry connectors hand over);
the detectors, the incident service, the agent graph, policy, approvals and the execution service are the
production ones over a throw-away SQLite store. The cluster is the twin's Kubernetes API served on a loopback
port and reached through the official client, as against a real cluster. Nothing waits on the wall clock:
every clock the service reads is the twin's, and a runbook that waits (a drain, a reboot) steps the twin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from agent.context import AgentContext
from agent.planning import Planner
from agent.rules import RulesPlanner
from agent.runner import RunReport
from connectors.kubernetes.adapter import KubernetesCluster
from detectors.findings import Finding
from gpuops.agent_wiring import CatalogueRunbooks, ExecutionActions, XidTable, resume_incident, start_incident
from gpuops.config import Settings
from gpuops.decisions import record_decision
from gpuops.detection import mark_examined
from gpuops.execution.approvals import Approver, expire_pending
from gpuops.execution.holds import due_holds
from gpuops.execution.service import ExecutionDeps
from gpuops.incidents.service import ingest_findings
from gpuops.policy import PolicyConfig
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from runbooks import RunbookSettings
from simulator.recording import FrameRecorder
from simulator.scenario import Scenario
from simulator.server import serve_twin
from simulator.twin import Twin

ApprovalMode = Literal["auto_approve", "auto_reject", "human"]
EVAL_CHANNEL = "cli"


def approver(index: int) -> Approver:
    """The evaluation's stand-in for an on-call human (distinct identities for the two-person rule)."""
    return Approver(identity=f"eval-approver-{index}", channel=EVAL_CHANNEL, authorised=True)


class SimulatedTime:
    """The clock every part of the service reads during an evaluation: the twin's time, which a runbook's
    `sleep` moves forward by stepping the twin (and sampling it, so the detectors miss nothing)."""

    def __init__(self, recorder: FrameRecorder) -> None:
        self.recorder = recorder
        self.twin = recorder.twin
        self.now = self.twin.t

    def clock(self) -> float:
        return max(self.now, self.twin.t)

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def sleep(self, seconds: float) -> None:
        self.now = self.clock() + max(seconds, 0.0)
        while not self.twin.finished and self.twin.t + self.twin.step_s <= self.now + 1e-9:
            self.recorder.step()


@contextmanager
def served(twin: Twin) -> Iterator[str]:
    """The twin's /metrics and Kubernetes API on a free loopback port, for as long as the block runs. No clock
    thread: the caller steps the twin."""
    twin_server = serve_twin(twin, name="eval-twin")
    try:
        yield twin_server.url
    finally:
        twin_server.stop()


@dataclass
class LoopRun:
    """What one run of the whole loop leaves behind, read back from the store at the end."""

    findings: list[Finding]
    truth: dict[str, Any]
    incidents: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    planner: str
    cordoned_at_end: list[str] = field(default_factory=list)  # nodes left unschedulable on the twin
    agent_runs: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Driver:
    """Starts the agent on new incidents and plays the scenario's approver."""

    container: Container
    ctx: AgentContext
    time: SimulatedTime
    approval: ApprovalMode
    waiting: dict[int, int] = field(default_factory=dict)  # action id → incident id, for `human`
    runs: int = 0

    def start(self, incident_id: int) -> None:
        with self.container.uow() as uow:
            incident = uow.session.get(Incident, incident_id)
            if incident is None or incident.status != "open":
                return  # folded into a fleet incident, or escalated when it opened
        self.runs += 1
        self._settle(incident_id, start_incident(self.container, incident_id, self.ctx))

    def _settle(self, incident_id: int, report: RunReport) -> None:
        while report.waiting_for:
            action_id = int(report.waiting_for["action_id"])
            if self.approval == "human":
                self.waiting[action_id] = incident_id
                return
            decision = "approve" if self.approval == "auto_approve" else "reject"
            with self.container.uow() as uow:
                action = uow.session.get(Action, action_id)
                required = max(1, action.approvals_required) if action is not None else 1
            for index in range(1, (required if decision == "approve" else 1) + 1):
                record_decision(self.container, action_id=action_id, approver=approver(index), decision=decision,
                                plan_hash=None, reason=f"scenario approval: {self.approval}", now=self.time.at())
            self.runs += 1
            report = resume_incident(self.container, incident_id, {"action_id": action_id, "decision": decision},
                                     self.ctx)

    def release(self) -> None:
        """Resume the incidents whose soak before a node action is over."""
        with self.container.uow() as uow:
            due = due_holds(uow.session, shards=1, now=self.time.at())
        for incident_id in due:
            self.runs += 1
            self._settle(incident_id, resume_incident(self.container, incident_id, {"hold": "over"}, self.ctx))

    def expire(self) -> None:
        """Nobody answers: approvals left waiting past the policy's TTL (in simulated time) expire."""
        if self.approval != "human" or not self.waiting:
            return
        with self.container.uow() as uow:
            expired = expire_pending(uow.session, now=self.time.at(), ttl_s=self.container.policy.approval_ttl_s)
            uow.commit()
        for action_id in expired:
            incident_id = self.waiting.pop(action_id, None)
            if incident_id is not None:
                self.runs += 1
                self._settle(incident_id, resume_incident(self.container, incident_id,
                                                          {"action_id": action_id, "decision": "expired"}, self.ctx))


def runbook_settings(step_s: float) -> RunbookSettings:
    """The production runbook settings, polling once per twin step (the twin changes no faster)."""
    return RunbookSettings(poll_interval_s=step_s, evict_retry_interval_s=step_s)


PlannerFactory = Callable[[Twin], AbstractContextManager[Planner]]


def run_loop(scenario: Scenario, *, planner: PlannerFactory, policy: PolicyConfig, workdir: Path,
             cycle_steps: int = 2) -> LoopRun:
    """Run `scenario` through the whole service; see the module docstring."""
    database_url = f"sqlite:///{workdir / 'eval.db'}"
    migrate.upgrade(database_url)
    twin = Twin(scenario)
    recorder = FrameRecorder(twin)
    sim = SimulatedTime(recorder)
    settings = Settings(database_url=database_url, dry_run=False, broker_url=None)
    with served(twin) as url:
        cluster = KubernetesCluster.connect(api_url=url, verify_ssl=False)
        container = bootstrap(settings, cluster=cluster, policy=policy,
                              runbook_settings=runbook_settings(twin.step_s))
        try:
            with planner(twin) as chosen:
                return _drive(scenario, recorder, sim, container, chosen, cycle_steps)
        finally:
            container.close()


def _drive(scenario: Scenario, recorder: FrameRecorder, sim: SimulatedTime, container: Container,
           planner: Planner, cycle_steps: int) -> LoopRun:
    """Detection cycles until the scenario ends; the agent runs on every new incident as it opens, and resumes
    when a node action's soak is over."""
    twin = recorder.twin
    deps = ExecutionDeps(catalogue=container.catalogue, cluster=container.cluster, policy=container.policy,
                         runbook_settings=container.runbook_settings, clock=sim.clock, sleep=sim.sleep,
                         worker="eval")
    ctx = AgentContext(uow=container.uow, runbooks=CatalogueRunbooks(container.catalogue),
                       actions=ExecutionActions(container.uow, deps, dry_run=False), planner=planner,
                       fallback=RulesPlanner(), cluster=container.cluster, xid=XidTable(), clock=sim.at,
                       database_url=container.settings.database_url)
    driver = _Driver(container, ctx, sim, scenario.approval)
    detection = container.new_detection_cycle()
    findings: list[Finding] = []
    while True:
        while recorder.pending < cycle_steps and not twin.finished:
            recorder.step()
        if recorder.pending == 0:
            break
        frame = recorder.frame()
        new = detection.update(frame)
        sim.now = max(sim.now, twin.t)
        findings.extend(new)
        with container.uow() as uow:
            result = ingest_findings(uow.session, new, fleet_nodes=twin.n_nodes)
            mark_examined(uow.session, float(frame.timestamps[-1]))
            uow.commit()
        for incident_id in sorted(set(result.opened + result.reopened)):
            driver.start(incident_id)
        driver.release()
        driver.expire()
    cordoned = [n for n in twin.nodes if not twin.kube.node_schedulable(n)]
    return LoopRun(findings=findings, truth=twin.truth(), planner=planner.name, agent_runs=driver.runs,
                   cordoned_at_end=cordoned, **_read_back(container))


def _iso(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _read_back(container: Container) -> dict[str, Any]:
    with container.uow() as uow:
        session = uow.session
        incidents = [{"id": i.id, "family": i.family, "status": i.status, "scope": i.scope, "hostname": i.hostname,
                      "gpu": i.gpu, "parent_id": i.parent_id, "opened_at": _iso(i.opened_at),
                      "updated_at": _iso(i.updated_at), "resolved_at": _iso(i.resolved_at),
                      "details": dict(i.details or {})}
                     for i in session.scalars(select(Incident).order_by(Incident.id))]
        actions = [{"id": a.id, "incident_id": a.incident_id, "runbook": a.runbook, "targets": list(a.targets),
                    "status": a.status, "created_at": _iso(a.created_at), "executed_at": _iso(a.executed_at),
                    "verified_at": _iso(a.verified_at), "diff": dict(a.diff or {}), "verdict": dict(a.verdict or {}),
                    "approved_by": [p.approver for p in a.approvals if p.decision == "approve"],
                    "rejected_by": [p.approver for p in a.approvals if p.decision == "reject"],
                    "approvals_required": a.approvals_required}
                   for a in session.scalars(select(Action).order_by(Action.id))]
        audit = [{"seq": e.seq, "ts": _iso(e.ts), "actor": e.actor, "kind": e.kind, "incident_id": e.incident_id,
                  "action_id": e.action_id, "data": dict(e.data or {})}
                 for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    return {"incidents": incidents, "actions": actions, "audit": audit}
