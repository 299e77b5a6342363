"""The whole loop on one scenario, at high speed and in simulated time.

The twin is stepped in process and sampled into FleetFrames (the shape the telemetry connectors hand over),
and the service's own pipeline runs on them over a throw-away SQLite store: the same use cases the workers
run, with the twin's clock and a dispatcher that runs each step in order instead of enqueuing it. The
cluster is the twin's Kubernetes API served on a loopback port and reached through the official client, as
against a real cluster. Nothing waits on the wall clock: every clock the service reads is the twin's, and a
runbook that waits (a drain, a reboot) steps the twin.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import select

from agent.planning import Planner
from connectors.kubernetes.adapter import KubernetesCluster
from connectors.telemetry.port import NodeSeries
from detectors.findings import Finding
from detectors.frame import FleetFrame
from domain import clock as gpuops_clock
from gpuops.config import Settings
from gpuops.execution.approvals import Approver
from gpuops.execution.probation import kept_out, mark_repaired, returned_degraded, returned_without_gpu
from gpuops.notify import NullNotifier
from gpuops.pipeline import OrderedDispatcher, Pipeline, Step
from gpuops.policy import PolicyConfig
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, FindingRecord, HardwareTicket, Incident
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

    def __init__(self, recorder: FrameRecorder, *, pause_s: float = 0.0) -> None:
        self.recorder = recorder
        self.twin = recorder.twin
        self.now = self.twin.t
        self.pause_s = pause_s

    def pause(self) -> None:
        """Give processes outside the loop (real node agents) `pause_s` of wall time to act."""
        if self.pause_s > 0:
            time.sleep(self.pause_s)

    def clock(self) -> float:
        return max(self.now, self.twin.t)

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def sleep(self, seconds: float) -> None:
        self.now = self.clock() + max(seconds, 0.0)
        while not self.twin.finished and self.twin.t + self.twin.step_s <= self.now + 1e-9:
            self.recorder.step()
        self.pause()


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
    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # the pipeline's steps, in order


class RecordedTelemetry:
    """The telemetry source of an evaluation. The detection cycle's window (ending now) is what the recorder
    sampled since the last cycle (the twin steps in process, and a runbook's wait steps it too); any other
    window (the agent looking back at an incident) is read from the frames already handed over, never taking
    samples from the next cycle."""

    def __init__(self, recorder: FrameRecorder, *, keep: int = 120) -> None:
        self.recorder = recorder
        self.history: deque[FleetFrame] = deque(maxlen=keep)

    def frame(self, start: float, end: float, step: float, metrics: Sequence[str] | None = None,
              node_series: Mapping[str, NodeSeries] | None = None) -> FleetFrame:
        if self.recorder.pending and end >= self.recorder.twin.t:
            frame = self.recorder.frame()
            self.history.append(frame)
            return frame
        return self._looking_back(start, end)

    def _looking_back(self, start: float, end: float) -> FleetFrame:
        frames = [f for f in self.history if f.n_steps and f.timestamps[-1] >= start and f.timestamps[0] <= end]
        if not frames:
            raise ValueError(f"no telemetry recorded between {start:.0f} and {end:.0f}")
        last = frames[-1]
        alike = [f for f in frames if f.gpus == last.gpus and f.nodes == last.nodes and f.hcas == last.hcas
                 and f.hca_metrics.keys() == last.hca_metrics.keys()
                 and f.metrics.keys() == last.metrics.keys() and f.node_metrics.keys() == last.node_metrics.keys()]
        ts = np.concatenate([f.timestamps for f in alike])
        keep = (ts >= start) & (ts <= end)
        return FleetFrame(
            timestamps=ts[keep], gpus=last.gpus, nodes=last.nodes,
            metrics={k: np.concatenate([f.metrics[k] for f in alike], axis=1)[:, keep] for k in last.metrics},
            node_metrics={k: np.concatenate([f.node_metrics[k] for f in alike], axis=1)[:, keep]
                          for k in last.node_metrics},
            hcas=last.hcas,
            hca_metrics={k: np.concatenate([f.hca_metrics[k] for f in alike], axis=1)[:, keep]
                         for k in last.hca_metrics})


class ScenarioApprover(NullNotifier):
    """The scenario's on-call human, at the notifier port: told that an action waits, they approve it (with
    as many distinct people as it needs) or reject it through the pipeline, or, for `human`, never answer."""

    def __init__(self, approval: ApprovalMode, time: SimulatedTime) -> None:
        self.approval = approval
        self.time = time
        self.pipeline: Pipeline | None = None

    def approval_requested(self, action_id: int) -> None:
        if self.approval == "human" or self.pipeline is None:
            return
        decision = "approve" if self.approval == "auto_approve" else "reject"
        with self.pipeline.container.uow() as uow:
            action = uow.session.get(Action, action_id)
            required = max(1, action.approvals_required) if action is not None else 1
        for index in range(1, (required if decision == "approve" else 1) + 1):
            self.pipeline.decide(action_id=action_id, approver=approver(index), decision=decision, plan_hash=None,
                                 reason=f"scenario approval: {self.approval}")


def runbook_settings(step_s: float) -> RunbookSettings:
    """The production runbook settings, polling once per twin step (the twin changes no faster)."""
    return RunbookSettings(poll_interval_s=step_s, evict_retry_interval_s=step_s)


PlannerFactory = Callable[[Twin], AbstractContextManager[Planner]]


class Cycles(Protocol):
    """Who runs an evaluation's steps: in order in this process (`in_order`, what `gpuops eval` does), or
    elsewhere (the tests run them on real workers through the broker)."""

    pipeline: Pipeline

    def run(self, end: float) -> list[Finding]:
        """The detection cycle ending at data time `end`, then the sweep, and every step they hand on."""
        ...

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        """The steps run so far, in order."""
        ...


CyclesFactory = Callable[[Container, SimulatedTime, Planner], AbstractContextManager[Cycles]]


class InOrder:
    """Each step runs in this thread as soon as it is due on the twin's clock, before the twin moves again."""

    def __init__(self, container: Container, sim: SimulatedTime, planner: Planner) -> None:
        self.dispatcher = OrderedDispatcher(sim.clock)
        self.pipeline = Pipeline(container, self.dispatcher, clock=sim.clock, sleep=sim.sleep, planner=planner,
                                 worker="eval")
        self.dispatcher.bind(self.pipeline.run)

    def run(self, end: float) -> list[Finding]:
        outcome = self.pipeline.detection_cycle(shard=0, shards=1, end=end)
        self.dispatcher.drain()
        self.pipeline.sweep()
        self.dispatcher.drain()
        return outcome.findings

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(str(step), payload) for step, payload in self.dispatcher.ran]


@contextmanager
def in_order(container: Container, sim: SimulatedTime, planner: Planner) -> Iterator[Cycles]:
    yield InOrder(container, sim, planner)


@dataclass(frozen=True)
class NodeAgents:
    """Real node agents beside the loop (as `gpuops sim --external-node-agent`): the twin leaves GPU resets,
    reboots and validations to them; `start(twin, url)` runs them for as long as its block runs; every wait of
    the loop gives them `pause_s` of wall time; `settings` are the service's extra settings (node validation)."""

    start: Callable[[Twin, str], AbstractContextManager[Any]]
    pause_s: float = 0.1
    settings: Mapping[str, Any] = field(default_factory=dict)


def run_loop(scenario: Scenario, *, planner: PlannerFactory, policy: PolicyConfig, workdir: Path,
             cycle_steps: int = 2, database_url: str | None = None, broker_url: str | None = None,
             cycles: CyclesFactory = in_order, node_agents: NodeAgents | None = None) -> LoopRun:
    """Run `scenario` through the whole service; see the module docstring. The store is a fresh SQLite file
    in `workdir` unless `database_url` names another (empty) one."""
    database_url = database_url or f"sqlite:///{workdir / 'eval.db'}"
    migrate.upgrade(database_url)
    twin = Twin(scenario, external_node_agent=node_agents is not None)
    recorder = FrameRecorder(twin)
    sim = SimulatedTime(recorder, pause_s=node_agents.pause_s if node_agents else 0.0)
    settings = Settings(database_url=database_url, dry_run=False, broker_url=broker_url, step_seconds=twin.step_s,
                        cycle_seconds=cycle_steps * twin.step_s, **(node_agents.settings if node_agents else {}))
    approver_ = ScenarioApprover(scenario.approval, sim)
    with served(twin) as url, node_agents.start(twin, url) if node_agents else nullcontext():
        cluster = KubernetesCluster.connect(api_url=url, verify_ssl=False)
        container = bootstrap(settings, cluster=cluster, policy=policy, telemetry=RecordedTelemetry(recorder),
                              notifier=approver_, runbook_settings=runbook_settings(twin.step_s))
        try:
            # Everything the service stores takes the fleet's simulated time: one clock per record.
            with gpuops_clock.using(sim.clock), planner(twin) as chosen, cycles(container, sim, chosen) as runner:
                approver_.pipeline = runner.pipeline
                return _drive(recorder, sim, runner, chosen.name, cycle_steps)
        finally:
            container.close()


class Technicians:
    """The humans who work hardware tickets: `turnaround` after gpuops opened a ticket for a node it keeps out
    (or returned without a withheld GPU, or under a taint without an InfiniBand port), they replace the node's
    parts that have a hardware fault (and the ticket's GPU), then tell gpuops through the same call `gpuops
    tickets repaired` makes. gpuops returns the node, or its part, only through its probation's checks."""

    def __init__(self, twin: Twin, container: Container, turnaround: float | None) -> None:
        self.twin, self.container, self.turnaround = twin, container, turnaround

    def visit(self, now: float) -> list[str]:
        """Repair what is due at `now`; returns the nodes repaired."""
        if self.turnaround is None:
            return []
        due = datetime.fromtimestamp(now - self.turnaround, tz=UTC)
        with self.container.uow() as uow:
            tickets = list(uow.session.scalars(select(HardwareTicket).where(
                HardwareTicket.status == "open", HardwareTicket.created_at <= due).order_by(HardwareTicket.id)))
            nodes = sorted({t.hostname for t in tickets if kept_out(uow.session, t.hostname) is not None
                            or returned_without_gpu(uow.session, t.hostname) is not None
                            or returned_degraded(uow.session, t.hostname) is not None})
            repaired = []
            for node in nodes:
                gpus = {t.gpu for t in tickets if t.hostname == node and t.gpu is not None}
                gpus |= set(self.twin.faulty_gpus(node))
                for gpu in sorted(gpus):
                    self.twin.replace_gpu(node, gpu)
                mark_repaired(uow.session, node=node, by="eval-technician",
                              note=f"replaced GPU(s) {', '.join(map(str, sorted(gpus))) or 'none'}",
                              config=self.container.policy, now=datetime.fromtimestamp(now, tz=UTC))
                repaired.append(node)
            uow.commit()
        return repaired


def _drive(recorder: FrameRecorder, sim: SimulatedTime, runner: Cycles, planner: str, cycle_steps: int) -> LoopRun:
    """Detection cycles until the scenario ends, each followed by the sweep and what they hand on, and the
    technicians' visit."""
    twin = recorder.twin
    technicians = Technicians(twin, runner.pipeline.container, twin.scenario.repair_turnaround)
    findings: list[Finding] = []
    while True:
        while recorder.pending < cycle_steps and not twin.finished:
            recorder.step()
        if recorder.pending == 0:
            break
        sim.now = max(sim.now, twin.t)
        findings.extend(runner.run(twin.t))
        technicians.visit(twin.t)
        sim.pause()
    cordoned = [n for n in twin.nodes if not twin.kube.node_schedulable(n)]
    steps = runner.steps()
    runs = sum(1 for step, _ in steps if step == Step.AGENT_STEP)
    return LoopRun(findings=findings, truth=twin.truth(), planner=planner, agent_runs=runs,
                   cordoned_at_end=cordoned, steps=steps, **_read_back(runner.pipeline.container))


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
                      "details": dict(i.details or {}), "opened_by": _opening_finding(session, i.id)}
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


def _opening_finding(session: Any, incident_id: int) -> dict[str, Any] | None:
    """The first finding the incident holds: what paged the user."""
    record = session.scalars(select(FindingRecord).where(FindingRecord.incident_id == incident_id)
                             .order_by(FindingRecord.ts, FindingRecord.id).limit(1)).first()
    if record is None:
        return None
    return {"ts": _iso(record.ts), "kind": record.kind, "detector": record.detector, "severity": record.severity,
            "gpu": record.gpu, "score": round(record.score, 3), "evidence": dict(record.evidence or {})}
