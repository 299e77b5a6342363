"""The agent's ports over the real parts: the incident store (gpuops.incidents.agent_ports), policy's scope
rule, the runbook catalogue, the execution service, the XID catalogue; one builder of the agent's context
from them, and the core's entry points to the graph, which translate the agent's errors into the core's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from agent.actions import ExecutionView, HoldView, PlannedAction, ProposalView, RunbookSpec
from agent.checkpoint import open_checkpointer
from agent.context import AgentContext, AgentLimits
from agent.errors import CheckpointConfigError, IncidentNotFound, ThreadNotFound
from agent.graph import compile_graph
from agent.incidents import IncidentScope
from agent.llm import LLMLimits, LLMPlanner
from agent.planning import Planner
from agent.ports import ActionPort, TelemetryPort
from agent.rules import RulesPlanner
from agent.runner import RunReport, resume, start
from connectors.kubernetes import ClusterPort
from detectors.xid import XID_CATALOGUE
from gpuops.errors import ConfigError, NotFound
from gpuops.execution.holds import hold
from gpuops.execution.service import ExecutionDeps, Proposal, execute, propose, runbook_context
from gpuops.incidents.agent_ports import StoreEvidence, StoreIncidents
from gpuops.policy import scope_violations
from gpuops.store.models import Action, Incident
from gpuops.store.uow import UnitOfWork, UnitOfWorkFactory
from runbooks import Catalogue, InvalidPlan, InvalidTarget, Plan, Target, UnknownRunbook


class CatalogueRunbooks:
    """RunbookPort over `runbooks.Catalogue`: specs from the definitions, checks through `validate`."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def specs(self) -> list[RunbookSpec]:
        return [RunbookSpec(name=d.name, title=d.title, description=d.description, risk=d.risk.value,
                            target_kind=d.target_kind.value, params_schema=d.tool_schema(), disruptive=d.disruptive,
                            expected_effect=d.expected_effect, max_targets=d.max_targets)
                for d in self.catalogue.definitions()]

    def check(self, action: PlannedAction) -> list[str]:
        try:
            self.catalogue.validate(plan_of(action))
        except (UnknownRunbook, InvalidPlan) as exc:
            return [str(exc)]
        return []


def plan_of(action: PlannedAction) -> Plan:
    """The runbooks' Plan for an action; InvalidPlan for a malformed target key."""
    try:
        targets = tuple(Target.parse(key) for key in action.targets if key != "none")
    except InvalidTarget as exc:
        raise InvalidPlan(str(exc)) from exc
    return Plan(runbook=action.runbook, params=dict(action.params), targets=targets)


class ExecutionActions:
    """ActionPort over `gpuops.execution.service`: propose in one transaction, execute exactly once. `shards`
    is the number of detection shards, whose progress measures a hold's soak."""

    def __init__(self, uow: Callable[[], UnitOfWork], deps: ExecutionDeps, *, dry_run: bool,
                 shards: int = 1) -> None:
        self.uow, self.deps, self.dry_run, self.shards = uow, deps, dry_run, shards

    def hold(self, *, incident_id: int, action: PlannedAction) -> HoldView:
        try:
            plan = plan_of(action)
        except InvalidPlan:
            return HoldView("none")  # the proposal reports the bad target
        with self.uow() as uow:
            outcome = hold(uow, incident_id=incident_id, plan=plan, deps=self.deps, shards=self.shards)
            uow.commit()
        return HoldView(outcome.status, outcome.until.isoformat() if outcome.until else None, outcome.reason)

    def blockers(self, *, incident_id: int, action: PlannedAction) -> list[str]:
        try:
            return self.deps.catalogue.preconditions(plan_of(action), runbook_context(self.deps, incident_id, "agent"))
        except (UnknownRunbook, InvalidPlan) as exc:
            return [str(exc)]

    def propose(self, *, incident_id: int, action: PlannedAction, rationale: str, planner: str) -> ProposalView:
        try:
            plan = plan_of(action)
        except InvalidPlan as exc:
            return ProposalView(None, "invalid", reasons=[str(exc)])
        with self.uow() as uow:
            outcome = propose(uow, proposal=Proposal(incident_id, plan, rationale, planner), deps=self.deps)
            uow.commit()
        return ProposalView(**asdict(outcome))

    def status(self, action_id: int) -> str:
        with self.uow() as uow:
            action = uow.session.get(Action, action_id)
            return "missing" if action is None else action.status

    def execute(self, *, action_id: int) -> ExecutionView:
        outcome = execute(self.uow, action_id=action_id, deps=self.deps, dry_run=self.dry_run)
        return ExecutionView(**asdict(outcome))


class XidTable:
    """XidCatalogue over detectors.xid, as plain JSON values (the entry lands in the checkpointed state, which
    holds no enum types)."""

    def describe(self, code: int) -> Mapping[str, Any] | None:
        entry = XID_CATALOGUE.get(code)
        if entry is None:
            return None
        plain: dict[str, Any] = json.loads(json.dumps(asdict(entry)))
        return plain


class ScopePolicy:
    """PolicyPort over gpuops.policy's scope rule."""

    def scope_violations(self, incident: IncidentScope, targets: Sequence[str],
                         pod_nodes: Mapping[str, str | None]) -> list[str]:
        detached = Incident(id=incident.id, scope=incident.scope, hostname=incident.hostname, gpu=incident.gpu,
                            details=dict(incident.details))
        return scope_violations(detached, list(targets), pod_nodes)


def agent_context(uow: UnitOfWorkFactory, *, catalogue: Catalogue, actions: ActionPort, planner: Planner,
                  fallback: Planner, cluster: ClusterPort | None, telemetry: TelemetryPort | None = None,
                  limits: AgentLimits | None = None, database_url: str | None = None) -> AgentContext:
    """The agent's context over the core: the one place its ports are built, for the service, the evaluation
    and the tests alike. `actions` is an ExecutionActions on the caller's execution dependencies."""
    return AgentContext(incidents=StoreIncidents(uow), evidence=StoreEvidence(uow), policy=ScopePolicy(),
                        runbooks=CatalogueRunbooks(catalogue), actions=actions, planner=planner, fallback=fallback,
                        telemetry=telemetry, cluster=cluster, xid=XidTable(), limits=limits or AgentLimits(),
                        database_url=database_url)


def context_from_container(container: Any, *, limits: AgentLimits | None = None,
                           llm_limits: LLMLimits | None = None) -> AgentContext:
    """The agent's context from the wiring's container: LLM planner when one is configured, else the rules."""
    from gpuops.execution.service import deps_from

    rules = RulesPlanner()
    llm = LLMPlanner.from_settings(container.settings, llm_limits)
    try:
        telemetry = container.telemetry
    except ConfigError:  # no telemetry source: the metrics tool answers with an error result
        telemetry = None
    actions = ExecutionActions(container.uow, deps_from(container), dry_run=container.settings.dry_run,
                               shards=container.settings.shards)
    return agent_context(container.uow, catalogue=container.catalogue, actions=actions, planner=llm or rules,
                         fallback=rules, cluster=container.cluster, telemetry=telemetry, limits=limits,
                         database_url=container.settings.database_url)


@contextmanager
def _core_errors() -> Iterator[None]:
    """The agent's errors as the core's, so callers catch one tree (NotFound, ConfigError)."""
    try:
        yield
    except (IncidentNotFound, ThreadNotFound) as exc:
        raise NotFound(str(exc)) from exc
    except CheckpointConfigError as exc:
        raise ConfigError(str(exc)) from exc


def start_incident(container: Any, incident_id: int, ctx: AgentContext | None = None) -> RunReport:
    """Run an incident's graph from the wiring's container until it finishes or waits for a decision.
    NotFound when the incident does not exist."""
    ctx = ctx or context_from_container(container)
    with _core_errors(), open_checkpointer(container.settings.database_url) as saver:
        return start(compile_graph(saver), ctx, incident_id)


def resume_incident(container: Any, incident_id: int, decision: dict[str, Any] | None = None,
                    ctx: AgentContext | None = None) -> RunReport:
    """Resume an incident's thread after a decision was recorded (Slack, dashboard, CLI). NotFound when the
    incident has no thread."""
    ctx = ctx or context_from_container(container)
    with _core_errors(), open_checkpointer(container.settings.database_url) as saver:
        return resume(compile_graph(saver), ctx, incident_id, decision)
