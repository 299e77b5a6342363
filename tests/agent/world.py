"""A small fleet for the agent's tests, built the same way in every process (the approving CLI process
rebuilds it through `context_for`).

`StoreActions` is the store-backed action port the tests use until the execution service lands: real Action
rows with an idempotency key, the real policy `evaluate`, real approvals (`decide`), and an execution claim in
the store. Each execution appends a line to a journal file, so a test can count executions across processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update

from agent.actions import ExecutionView, PlannedAction, ProposalView, RunbookSpec
from agent.context import AgentContext
from agent.rules import RulesPlanner
from gpuops.policy import ActionSpec, FleetFacts, Gate, PolicyConfig, evaluate
from gpuops.store.audit import append_event
from gpuops.store.models import Action, Incident
from gpuops.wiring import Container

NODES = 8
GPUS_PER_NODE = 8
POLICY = PolicyConfig(max_nodes_out=2, max_nodes_out_fraction=0.25, min_healthy_gpu_fraction=0.5)
JOURNAL_ENV = "AGENT_TEST_JOURNAL"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


class NodeParams(_Params):
    pass


class RescheduleParams(_Params):
    gpu: int | None = Field(default=None, ge=0)
    keep_off: Literal["taint", "cordon"] = "taint"


class TicketParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu: int | None = Field(default=None, ge=0)
    summary: str = Field(min_length=1, max_length=500)
    fault: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=4000)


class RestartParams(_Params):
    whole_job: bool = True


class ScaleParams(_Params):
    replicas: int = Field(ge=0, le=10_000)


@dataclass(frozen=True)
class _Runbook:
    name: str
    risk: str
    target_kind: str
    params: type[BaseModel]
    disruptive: bool
    max_targets: int = 1


RUNBOOKS = (
    _Runbook("cordon_node", "low", "node", NodeParams, True),
    _Runbook("drain_node", "medium", "node", NodeParams, True),
    _Runbook("reboot_node", "high", "node", NodeParams, True),
    _Runbook("reset_gpu", "medium", "gpu", NodeParams, True),
    _Runbook("reschedule_pods", "medium", "node", RescheduleParams, True),
    _Runbook("open_hardware_ticket", "low", "node", TicketParams, False),
    _Runbook("notify_only", "low", "none", NotifyParams, False, max_targets=0),
    _Runbook("restart_pod", "medium", "pod", RestartParams, False),
    _Runbook("scale_deployment", "medium", "deployment", ScaleParams, False),
)


class MirrorRunbooks:
    """The runbook port over a mirror of the catalogue's definitions (names, target kinds, parameter models)."""

    def __init__(self) -> None:
        self._by_name = {r.name: r for r in RUNBOOKS}

    def specs(self) -> list[RunbookSpec]:
        return [RunbookSpec(r.name, r.name.replace("_", " "), f"{r.name.replace('_', ' ')} on a {r.target_kind}",
                            r.risk, r.target_kind, r.params.model_json_schema(), r.disruptive,
                            max_targets=r.max_targets) for r in RUNBOOKS]

    def check(self, action: PlannedAction) -> list[str]:
        runbook = self._by_name.get(action.runbook)
        if runbook is None:
            return [f"no runbook named {action.runbook!r}; the catalogue has {', '.join(sorted(self._by_name))}"]
        problems = []
        try:
            runbook.params.model_validate(action.params)
        except ValidationError as exc:
            problems.append(f"{action.runbook}: invalid parameters: {exc.errors()[0]['msg']} "
                            f"at {'.'.join(str(p) for p in exc.errors()[0]['loc'])}")
        kinds = {t.partition("/")[0] for t in action.targets}
        if runbook.target_kind == "none":
            if action.targets not in ((), ("none",)):
                problems.append(f"{action.runbook} takes no targets")
        elif kinds != {runbook.target_kind} or not 1 <= len(action.targets) <= runbook.max_targets:
            problems.append(f"{action.runbook} takes 1 to {runbook.max_targets} {runbook.target_kind} target(s), "
                            f"got {list(action.targets)}")
        return problems

    def get(self, name: str) -> _Runbook:
        return self._by_name[name]


def _pod(namespace: str, name: str, node: str, gpus: list[int], owner: str, **notes: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "labels": {"app": owner},
                         "annotations": {"sim.gpuops.io/gpus": ",".join(map(str, gpus)), **notes},
                         "ownerReferences": [{"kind": "Job", "name": owner, "controller": True}]},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def node_name(i: int) -> str:
    return f"gpu-node-{i:03d}"


@dataclass
class FakeCluster:
    """An in-memory cluster read side: eight nodes, a training job on every node, an inference deployment."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def default(cls) -> FakeCluster:
        cluster = cls()
        for i in range(1, NODES + 1):
            name = node_name(i)
            cluster.nodes[name] = {
                "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "H100"}, "annotations": {}},
                "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                                       "capacity": {"nvidia.com/gpu": str(GPUS_PER_NODE)}}}
            for g in range(0, GPUS_PER_NODE, 2):
                cluster.pods.append(_pod("train", f"llm-{i}-{g}", name, [g, g + 1], "llm-pretrain"))
        cluster.pods.append(_pod("serve", "chat-0", node_name(1), [], "chat"))
        cluster.deployments["serve/chat"] = {"metadata": {"namespace": "serve", "name": "chat"},
                                             "spec": {"replicas": 4}}
        return cluster

    def get_node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.nodes[name])

    def list_pods(self, *, node: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods
                if (node is None or p["spec"]["nodeName"] == node)
                and (namespace is None or p["metadata"]["namespace"] == namespace)]

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.deployments[f"{namespace}/{name}"])


def _node_of(key: str) -> str | None:
    kind, _, rest = key.partition("/")
    return rest if kind == "node" else rest.rpartition("/")[0] if kind == "gpu" else None


class StoreActions:
    """The action port on the real store and policy (see the module docstring)."""

    def __init__(self, container: Container, runbooks: MirrorRunbooks, cluster: FakeCluster,
                 journal: Path, policy: PolicyConfig = POLICY) -> None:
        self.container, self.runbooks, self.cluster, self.journal, self.policy = (
            container, runbooks, cluster, journal, policy)

    def _spec(self, action: PlannedAction, pod_nodes: dict[str, str | None]) -> ActionSpec:
        runbook = self.runbooks.get(action.runbook)
        nodes = tuple(n for t in action.targets if (n := _node_of(t)))
        return ActionSpec(runbook=runbook.name, risk=runbook.risk, disruptive=runbook.disruptive,
                          auto_approvable=runbook.risk == "low", target_keys=action.targets, target_nodes=nodes,
                          pod_nodes=pod_nodes)

    def _facts(self) -> FleetFacts:
        return FleetFacts(nodes=NODES, gpus=NODES * GPUS_PER_NODE, healthy_gpus=NODES * GPUS_PER_NODE,
                          gpus_per_node=GPUS_PER_NODE)

    def propose(self, *, incident_id: int, action: PlannedAction, rationale: str, planner: str) -> ProposalView:
        problems = self.runbooks.check(action)
        if problems:
            return ProposalView(None, "invalid", reasons=problems)
        plan_hash = hashlib.sha256(json.dumps(action.to_json(), sort_keys=True).encode()).hexdigest()
        key = f"incident-{incident_id}:{plan_hash}"
        now = datetime.now(tz=UTC)
        pods = {t: next((p["spec"]["nodeName"] for p in self.cluster.pods
                         if f"pod/{p['metadata']['namespace']}/{p['metadata']['name']}" == t), None)
                for t in action.targets if t.startswith("pod/")}
        with self.container.uow() as uow:
            stored = uow.session.scalars(select(Action).where(Action.idempotency_key == key)).first()
            if stored is None:
                stored = Action(incident_id=incident_id, runbook=action.runbook, parameters=action.params,
                                targets=list(action.targets), plan_hash=plan_hash, idempotency_key=key,
                                rationale=rationale, risk=self.runbooks.get(action.runbook).risk)
                uow.session.add(stored)
                uow.flush()
                incident = uow.session.get(Incident, incident_id)
                assert incident is not None
                verdict = evaluate(uow.session, incident=incident, action=stored,
                                   spec=self._spec(action, pods), facts=self._facts(), config=self.policy, now=now)
                stored.verdict = verdict.to_json()
                stored.approvals_required = verdict.approvals_required
                stored.status = {Gate.AUTO: "approved", Gate.DENIED: "denied",
                                 Gate.ESCALATE: "escalated"}.get(verdict.gate, "awaiting_approval")
                node = next((_node_of(t) for t in action.targets if _node_of(t)), None)
                affected = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.cluster.pods
                            if node is not None and p["spec"]["nodeName"] == node]
                stored.diff = {"changes": [f"{action.runbook} {' '.join(action.targets)}"],
                               "pods_affected": affected if self.runbooks.get(action.runbook).disruptive else [],
                               "gpus_affected": GPUS_PER_NODE if node else 0,
                               "gpu_hours_at_risk": 2.0 * len(affected), "blockers": []}
                append_event(uow.session, actor=planner, kind="action.proposed", incident_id=incident_id,
                             action_id=stored.id, data={**action.to_json(), "status": stored.status}, ts=now)
                uow.commit()
            return ProposalView(stored.id, stored.status, stored.verdict, stored.diff,
                                list(stored.verdict.get("reasons", [])), stored.approvals_required)

    def status(self, action_id: int) -> str:
        with self.container.uow() as uow:
            action = uow.session.get(Action, action_id)
            assert action is not None
            return action.status

    def execute(self, *, action_id: int) -> ExecutionView:
        now = datetime.now(tz=UTC)
        with self.container.uow() as uow:
            claimed = uow.session.execute(
                update(Action).where(Action.id == action_id, Action.status == "approved")
                .values(status="executing", claimed_by=f"pid-{os.getpid()}", executed_at=now)
            ).rowcount
            uow.commit()
        if not claimed:
            status = self.status(action_id)
            return ExecutionView(action_id, "already_done" if status == "succeeded" else "refused",
                                 status == "succeeded", f"action {action_id} is {status}")
        with self.journal.open("a") as out:
            out.write(f"{action_id} {os.getpid()}\n")
        with self.container.uow() as uow:
            action = uow.session.get(Action, action_id)
            assert action is not None
            action.status, action.verified_at = "succeeded", now
            append_event(uow.session, actor="executor", kind="action.executed", incident_id=action.incident_id,
                         action_id=action_id, data={"runbook": action.runbook}, ts=now)
            uow.commit()
        return ExecutionView(action_id, "succeeded", True, "done")


def executions(journal: Path) -> list[int]:
    return [int(line.split()[0]) for line in journal.read_text().splitlines()] if journal.exists() else []


def build_context(container: Container, journal: Path, *, planner: Any = None,
                  cluster: FakeCluster | None = None, telemetry: Any = None, xid: Any = None,
                  **limits: Any) -> AgentContext:
    from agent.context import AgentLimits

    cluster = cluster or FakeCluster.default()
    runbooks = MirrorRunbooks()
    rules = RulesPlanner()
    return AgentContext(uow=container.uow, runbooks=runbooks,
                        actions=StoreActions(container, runbooks, cluster, journal), planner=planner or rules,
                        fallback=rules, telemetry=telemetry, cluster=cluster, xid=xid,
                        limits=AgentLimits(**limits))


def context_for(container: Container) -> AgentContext:
    """The factory `gpuops approve --context-factory tests.agent.world:context_for` calls in its own process."""
    return build_context(container, Path(os.environ[JOURNAL_ENV]))
