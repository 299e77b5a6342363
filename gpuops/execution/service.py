"""Proposing and executing actions. `propose` validates a plan in code, rehearses it and asks policy;
`execute` runs an approved action exactly once: it claims the action in the store, re-checks the approval
(plan hash, expiry) and the budgets (taking node leases), runs the steps, verifies, rolls back on failure,
and audits every step."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from connectors.kubernetes import ClusterPort
from connectors.kubernetes.errors import ClusterError
from domain import ActionStatus, ExecutionStatus, IncidentStatus, ProposalStatus, clock
from gpuops.execution.approvals import valid_approvals
from gpuops.execution.probation import begin_probation, record_isolated, record_ticket, withheld_gpus
from gpuops.incidents.lifecycle import add_timeline, can_transition, transition
from gpuops.logs import log_context
from gpuops.policy import (
    ActionSpec,
    FleetFacts,
    Gate,
    PolicyConfig,
    Verdict,
    budget_wait,
    evaluate,
    record_verification,
    release_node,
)
from gpuops.store.audit import append_event
from gpuops.store.models import Action, FindingRecord, Incident
from gpuops.store.uow import UnitOfWork
from runbooks import (
    Catalogue,
    Diff,
    InvalidPlan,
    InvalidTarget,
    Plan,
    RunbookContext,
    RunbookSettings,
    StepResult,
    Target,
    TargetKind,
    UnknownRunbook,
)
from runbooks.context import no_gpu_uuid, no_withheld_gpus
from runbooks.reset_gpu import NOT_BACK

log = logging.getLogger(__name__)

# Runbooks that hand their node back to service themselves when verified (their cordon lasts while they run): no
# probation follows, and their lease on the node is released at once.
RETURNS_ITS_NODE = frozenset({"isolate_gpu"})

BUDGET_WAIT_KEY = "budget_wait_since"  # in an incident's details: when it began waiting for the budgets
BUDGET_RECHECK_S = 300.0
PROPOSAL_OF_GATE = {Gate.AUTO: ProposalStatus.APPROVED, Gate.ONE_APPROVER: ProposalStatus.AWAITING_APPROVAL,
                    Gate.TWO_APPROVERS: ProposalStatus.AWAITING_APPROVAL, Gate.ESCALATE: ProposalStatus.ESCALATED,
                    Gate.DENIED: ProposalStatus.DENIED}


@dataclass(frozen=True)
class Proposal:
    """What a planner hands over: one plan for one incident, with its rationale."""

    incident_id: int
    plan: Plan
    rationale: str
    planner: str  # rules | llm


@dataclass
class ProposalOutcome:
    action_id: int | None
    status: str  # a ProposalStatus, or the ActionStatus of the earlier action the store answered with
    verdict: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    approvals_required: int = 0

    def __post_init__(self) -> None:
        self.status = str(self.status)  # plain text: outcomes travel in task payloads and the agent's checkpoints


@dataclass
class ExecutionOutcome:
    action_id: int
    status: str  # an ExecutionStatus
    verified: bool
    detail: str
    follow_up: str = ""
    """The runbook a failed verification calls for next, where one does (a GPU reset that ran but did not bring
    its GPU back: a reboot, which reloads the driver and walks the bus again); the agent decides whether to."""
    until: str = ""
    """While it waits (`waiting`): when its incident's hold is rechecked (ISO 8601)."""

    def __post_init__(self) -> None:
        self.status = str(self.status)  # plain text: outcomes travel in task payloads and the agent's checkpoints


@dataclass
class ExecutionDeps:
    """What execution needs besides the store: the catalogue, the cluster, and time."""

    catalogue: Catalogue
    cluster: ClusterPort
    policy: PolicyConfig
    runbook_settings: RunbookSettings = field(default_factory=RunbookSettings)
    clock: Callable[[], float] = field(default_factory=lambda: _wall_clock)
    sleep: Callable[[float], None] = field(default_factory=lambda: _wall_sleep)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}")
    claim_ttl_s: float = 1800.0
    withheld_gpus: Callable[[str], tuple[int, ...]] = no_withheld_gpus
    """A node's GPUs it returned to service without (`gpuops.execution.probation.withheld_gpus`, from the store)."""
    gpu_uuid: Callable[[int | None, str, int], str | None] = no_gpu_uuid
    """The UUID an incident's findings gave a node's GPU (`incident_gpu_uuid`, from the store)."""


def deps_from(container: Any, **overrides: Any) -> ExecutionDeps:
    """Execution dependencies from a wiring container (the cluster is connected here, on first use)."""
    def withheld(node: str) -> tuple[int, ...]:
        with container.uow() as uow:
            return tuple(sorted(withheld_gpus(uow.session, node)))

    def named(incident_id: int | None, node: str, gpu: int) -> str | None:
        with container.uow() as uow:
            return incident_gpu_uuid(uow.session, incident_id, node, gpu)

    overrides.setdefault("withheld_gpus", withheld)
    overrides.setdefault("gpu_uuid", named)
    return ExecutionDeps(catalogue=container.catalogue, cluster=container.cluster, policy=container.policy,
                         runbook_settings=container.runbook_settings, **overrides)


def incident_gpu_uuid(session: Session, incident_id: int | None, node: str, gpu: int) -> str | None:
    """The UUID the latest finding of an incident (or of one it absorbed) gave GPU `gpu` of `node`: the GPU the
    incident is about, whatever index NVML gives it by the time a request reaches the node."""
    if incident_id is None:
        return None
    absorbed = select(Incident.id).where(Incident.parent_id == incident_id)
    return session.scalars(
        select(FindingRecord.uuid).where(or_(FindingRecord.incident_id == incident_id,
                                             FindingRecord.incident_id.in_(absorbed)),
                                         FindingRecord.hostname == node, FindingRecord.gpu == gpu,
                                         FindingRecord.uuid.is_not(None))
        .order_by(FindingRecord.ts.desc(), FindingRecord.id.desc()).limit(1)).first()


def _wall_clock() -> float:
    return clock.timestamp()  # the service's clock (the wall clock, or a simulated fleet's)


def _wall_sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _now(deps: ExecutionDeps) -> datetime:
    return datetime.fromtimestamp(deps.clock(), tz=UTC)


def plan_of(action: Action) -> Plan:
    """The plan stored in an action row (its hash is recomputed from these fields, never trusted)."""
    try:
        targets = tuple(Target.parse(str(k)) for k in action.targets)
    except InvalidTarget as exc:
        raise InvalidPlan(f"action {action.id}: {exc}") from exc
    return Plan(runbook=action.runbook, params=dict(action.parameters), targets=targets)


def fleet_facts(cluster: ClusterPort) -> FleetFacts:
    """Budget inputs read live from the cluster: nodes, GPUs, healthy GPUs, nodes out of service."""
    nodes = cluster.list_nodes()
    in_service = [n for n in nodes if n.ready and not n.unschedulable]
    return FleetFacts(nodes=len(nodes), gpus=sum(n.gpu_capacity for n in nodes),
                      healthy_gpus=sum(n.gpu_allocatable for n in in_service),
                      gpus_per_node=max((n.gpu_capacity for n in nodes), default=0),
                      unschedulable=frozenset(n.name for n in nodes if n.unschedulable or not n.ready),
                      healthy_by_node={n.name: n.gpu_allocatable for n in in_service},
                      cordoned_by_others=frozenset(n.name for n in nodes
                                                   if n.unschedulable and not n.cordoned_by_gpuops))


def action_spec(plan: Plan, risk: str, catalogue: Catalogue, cluster: ClusterPort) -> ActionSpec:
    definition = catalogue.get(plan.runbook)
    nodes: list[str] = []
    pod_nodes: dict[str, str | None] = {}
    for t in plan.targets:
        if t.kind in (TargetKind.NODE, TargetKind.GPU) and t.node:
            nodes.append(t.node)
        elif t.kind == TargetKind.POD and t.namespace and t.name:
            try:
                pod_nodes[t.key()] = cluster.get_pod(t.namespace, t.name).node
            except ClusterError:  # a pod that no longer exists is outside any incident
                pod_nodes[t.key()] = None
    taken = _gpus_taken(plan, cluster) if definition.disruptive and definition.takes == "gpu" else {}
    return ActionSpec(runbook=plan.runbook, risk=risk, disruptive=definition.disruptive,
                      auto_approvable=definition.auto_approvable, target_keys=tuple(t.key() for t in plan.targets),
                      target_nodes=tuple(dict.fromkeys(nodes)), pod_nodes=pod_nodes, gpus_taken=taken)


def _gpus_taken(plan: Plan, cluster: ClusterPort) -> dict[str, int]:
    """What a runbook that takes only its GPU takes from its node's healthy count while it runs: the GPU, and the
    GPUs no pod holds (its cordon keeps new pods off them meanwhile); the pods on the other GPUs keep running. A
    node that cannot be read counts whole (`ActionSpec.taken_from`)."""
    taken: dict[str, int] = {}
    for t in plan.targets:
        if t.kind is not TargetKind.GPU or not t.node or t.gpu is None:
            continue
        try:
            node = cluster.get_node(t.node)
            pods = cluster.list_pods(t.node)
        except ClusterError:
            continue
        held = {g for p in pods if p.phase in ("Pending", "Running") for g in p.gpu_indices}
        free_others = node.gpu_allocatable - len(held) - (t.gpu not in held)
        taken[t.node] = taken.get(t.node, 0) + 1 + max(0, free_others)
    return taken


def runbook_context(deps: ExecutionDeps, incident_id: int | None, actor: str,
                    on_step: Callable[[str, StepResult], None] | None = None,
                    action_id: int | None = None) -> RunbookContext:
    """The runbooks' context for one incident's action (or a planner's question about one)."""
    ctx = RunbookContext(cluster=deps.cluster, settings=deps.runbook_settings, clock=deps.clock, sleep=deps.sleep,
                         incident_id=incident_id, actor=actor, action_id=action_id, withheld_gpus=deps.withheld_gpus,
                         gpu_uuid=deps.gpu_uuid)
    if on_step is not None:
        ctx.on_step = on_step
    return ctx


def propose(uow: UnitOfWork, *, proposal: Proposal, deps: ExecutionDeps) -> ProposalOutcome:
    """Validate, rehearse and submit a plan to policy; store it as an action. Idempotent: the same plan for
    the same incident returns the action already stored (the agent re-runs this after a resume)."""
    session = uow.session
    now = _now(deps)
    incident = session.get(Incident, proposal.incident_id)
    if incident is None:
        return ProposalOutcome(None, ProposalStatus.INVALID,
                               reasons=[f"incident {proposal.incident_id} does not exist"])
    with log_context(incident_id=incident.id):
        try:
            plan = deps.catalogue.validate(proposal.plan)
        except (UnknownRunbook, InvalidPlan) as exc:
            append_event(session, actor=proposal.planner, kind="plan.invalid", incident_id=incident.id,
                         data={"runbook": proposal.plan.runbook, "error": str(exc)}, ts=now)
            return ProposalOutcome(None, ProposalStatus.INVALID, reasons=[str(exc)])
        # A reopened incident starts a new round: the same plan may run again then, never twice in one round.
        key = f"incident-{incident.id}:r{int(incident.details.get('round', 0))}:{plan.plan_hash()}"
        existing = session.scalars(select(Action).where(Action.idempotency_key == key)).first()
        if existing is not None:
            return ProposalOutcome(existing.id, existing.status, existing.verdict, existing.diff,
                                   list(existing.verdict.get("reasons", [])), existing.approvals_required)
        ctx = runbook_context(deps, incident.id, proposal.planner)
        risk = deps.catalogue.risk_for(plan, ctx).value
        diff: Diff = deps.catalogue.dry_run(plan, ctx)
        spec = action_spec(plan, risk, deps.catalogue, deps.cluster)
        action = Action(incident_id=incident.id, runbook=plan.runbook, parameters=plan.params,
                        targets=[t.key() for t in plan.targets], plan_hash=plan.plan_hash(), idempotency_key=key,
                        status=ActionStatus.PROPOSED, risk=risk, rationale=proposal.rationale, diff=asdict(diff),
                        created_at=now, updated_at=now)  # the execution clock, so approval expiry runs on it too
        session.add(action)
        session.flush()
        verdict = evaluate(session, incident=incident, action=action, spec=spec, facts=fleet_facts(deps.cluster),
                           config=deps.policy, now=now, actor="policy")
        reasons = list(verdict.reasons)
        if diff.blockers and verdict.allowed:
            reasons = [f"precondition: {b}" for b in diff.blockers]
            status = ProposalStatus.DENIED
        else:
            status = PROPOSAL_OF_GATE[verdict.gate]
        action.status = ActionStatus(status)
        action.approvals_required = verdict.approvals_required
        action.verdict = {**verdict.to_json(), "reasons": reasons}
        append_event(session, actor=proposal.planner, kind="action.proposed", incident_id=incident.id,
                     action_id=action.id, data={"runbook": plan.runbook, "params": plan.params,
                                                "targets": action.targets, "plan_hash": action.plan_hash,
                                                "rationale": proposal.rationale, "risk": risk, "status": status,
                                                "diff": action.diff}, ts=now)
        target_status = {ProposalStatus.AWAITING_APPROVAL: IncidentStatus.AWAITING_APPROVAL,
                         ProposalStatus.ESCALATED: IncidentStatus.ESCALATED}.get(status)
        if target_status and can_transition(incident.status, target_status):
            why = "; ".join(reasons) if status == ProposalStatus.ESCALATED else ""
            transition(session, incident, target_status,
                       reason=f"action {action.id} ({plan.runbook}): {status}{f': {why}' if why else ''}",
                       actor=proposal.planner, now=now)
        log.info("action proposed", extra={"action_id": action.id, "runbook": plan.runbook, "status": status})
        return ProposalOutcome(action.id, status, action.verdict, action.diff, reasons, action.approvals_required)


def _refuse(session: Session, action: Action, reason: str, now: datetime) -> ExecutionOutcome:
    action.status = ActionStatus.REFUSED
    action.error = reason
    append_event(session, actor="executor", kind="action.refused", incident_id=action.incident_id,
                 action_id=action.id, data={"reason": reason}, ts=now)
    incident = action.incident
    if can_transition(incident.status, IncidentStatus.ESCALATED):
        transition(session, incident, IncidentStatus.ESCALATED, reason=f"action {action.id} refused: {reason}",
                   actor="executor", now=now)
    return ExecutionOutcome(action.id, ExecutionStatus.REFUSED, False, reason)


def _wait_for_budget(session: Session, action: Action, spec: ActionSpec, verdict: Verdict, facts: FleetFacts,
                     deps: ExecutionDeps, now: datetime) -> str | None:
    """Why an approved action that policy now refuses waits rather than goes to a human: only the nodes-out
    budget or the healthy-GPU minimum refuses it, and only because of nodes gpuops itself has out, which come
    back by themselves (`policy.budget_wait`): another incident's remediation took its node out between this
    action's proposal and now. It waits, like a proposal does, up to `budget_wait_s` from when its incident began
    waiting; the incident is held, so the sweep resumes its thread every `BUDGET_RECHECK_S`. None: refuse it."""
    if verdict.gate != Gate.DENIED or not all(r.startswith("budget:") for r in verdict.reasons):
        return None
    reason = budget_wait(session, spec=spec, facts=facts, config=deps.policy)
    incident = action.incident
    if reason is None or hold_for_budget(session, incident, reason, now, deps.policy, action.runbook,
                                         f"action {action.id} ({action.runbook})") is None:
        return None
    append_event(session, actor="executor", kind="action.waiting", incident_id=incident.id, action_id=action.id,
                 data={"budget": reason, "until": incident.held_until.isoformat() if incident.held_until else None},
                 ts=now)
    return f"waits for the budget: {reason}"


def budget_waited_s(incident: Incident, now: datetime) -> float | None:
    """How long the incident has waited for the budget (None: it is not waiting)."""
    started = incident.details.get(BUDGET_WAIT_KEY)
    return None if started is None else (now - datetime.fromisoformat(started)).total_seconds()


def hold_for_budget(session: Session, incident: Incident, reason: str, now: datetime, policy: PolicyConfig,
                    runbook: str, what: str) -> datetime | None:
    """Hold the incident while `what` waits for the budget (`reason`): marked when it begins, with one timeline
    line for the whole wait, and rechecked every `BUDGET_RECHECK_S`. Returns the recheck, or None once it has
    waited `budget_wait_s` (the caller ends the wait)."""
    waited = budget_waited_s(incident, now)
    if waited is not None and waited >= policy.budget_wait_s:
        return None
    until = now + timedelta(seconds=min(BUDGET_RECHECK_S, policy.budget_wait_s - (waited or 0.0)))
    if waited is None:
        incident.details = {**incident.details, BUDGET_WAIT_KEY: now.isoformat()}
        add_timeline(session, incident, kind="agent.held", now=now,
                     data={"runbook": runbook, "until": until.isoformat(), "budget": reason},
                     message=f"{what} waits for the budget (up to {policy.budget_wait_s / 60:.0f} min): {reason}")
    incident.held_until = until
    return until


def end_budget_wait(session: Session, incident: Incident, why: str, now: datetime, runbook: str) -> None:
    """The incident stops waiting for the budget (`why`): its wait mark and hold are cleared."""
    incident.details = {k: v for k, v in incident.details.items() if k != BUDGET_WAIT_KEY}
    incident.held_until = None
    add_timeline(session, incident, kind="agent.hold_over", now=now, message=f"{why}; policy decides",
                 data={"runbook": runbook})


def _claim(uow: UnitOfWork, action_id: int, deps: ExecutionDeps, dry_run: bool) -> ExecutionOutcome | Action:
    """Phase 1, one locked transaction: decide whether this worker may run the action, and claim it."""
    session = uow.session
    now = _now(deps)
    action = session.execute(select(Action).where(Action.id == action_id).with_for_update()).scalar_one_or_none()
    if action is None:
        return ExecutionOutcome(action_id, ExecutionStatus.REFUSED, False, f"action {action_id} does not exist")
    if action.status in ActionStatus.FINISHED:
        return ExecutionOutcome(action.id, ExecutionStatus.ALREADY_DONE, action.status == ActionStatus.SUCCEEDED,
                                f"action {action.id} is already {action.status}")
    if action.status in ActionStatus.RUNNING and action.claim_expires_at and action.claim_expires_at > now:
        return ExecutionOutcome(action.id, ExecutionStatus.IN_PROGRESS, False,
                                f"action {action.id} is being run by {action.claimed_by}")
    resuming = action.status in ActionStatus.RUNNING
    if not resuming and action.status != ActionStatus.APPROVED:
        outcome = _refuse(session, action, f"action is {action.status}, not approved", now)
        uow.commit()
        return outcome
    plan = plan_of(action)
    if plan.plan_hash() != action.plan_hash:
        outcome = _refuse(session, action, "the plan changed after it was approved; a new approval is needed", now)
        uow.commit()
        return outcome
    approvals = valid_approvals(action, now)
    if not resuming and len(approvals) < action.approvals_required:
        given = [a for a in action.approvals if a.decision == "approve"]
        why = ("the approval expired" if any(a.expires_at <= now for a in given)
               else "the approval was given for a different plan" if given
               else "not approved")
        outcome = _refuse(session, action, f"{why}: {len(approvals)} of {action.approvals_required} valid", now)
        uow.commit()
        return outcome
    incident = action.incident
    spec = action_spec(plan, action.risk, deps.catalogue, deps.cluster)
    facts = fleet_facts(deps.cluster)
    verdict = evaluate(session, incident=incident, action=action, spec=spec, facts=facts,
                       config=deps.policy, now=now, reserve=not dry_run, actor="executor")
    if not verdict.allowed:
        waits = None if dry_run or resuming else _wait_for_budget(session, action, spec, verdict, facts, deps, now)
        if waits is not None:
            uow.commit()
            return ExecutionOutcome(action.id, ExecutionStatus.WAITING, False, waits,
                                    until=incident.held_until.isoformat() if incident.held_until else "")
        if incident.details.get(BUDGET_WAIT_KEY) is not None and not dry_run:
            end_budget_wait(session, incident, f"action {action.id} ({action.runbook}) stops waiting for the budget",
                            now, action.runbook)
        outcome = _refuse(session, action, "policy at execution time: " + "; ".join(verdict.reasons), now)
        uow.commit()
        return outcome
    if incident.details.get(BUDGET_WAIT_KEY) is not None and not dry_run:
        end_budget_wait(session, incident, f"action {action.id} ({action.runbook}) fits the budgets now", now,
                        action.runbook)
    if dry_run:
        ctx = runbook_context(deps, incident.id, "executor", action_id=action.id)
        action.diff = asdict(deps.catalogue.dry_run(plan, ctx))
        action.status = ActionStatus.DRY_RUN
        append_event(session, actor="executor", kind="action.dry_run", incident_id=incident.id, action_id=action.id,
                     data={"diff": action.diff}, ts=now)
        uow.commit()
        return ExecutionOutcome(action.id, ExecutionStatus.DRY_RUN, False, "dry run: nothing changed; " +
                                "; ".join(action.diff.get("changes", [])))
    action.status = ActionStatus.EXECUTING
    action.claimed_by = deps.worker
    action.claim_expires_at = now + timedelta(seconds=deps.claim_ttl_s)
    action.attempts += 1
    action.executed_at = action.executed_at or now
    append_event(session, actor="executor", kind="action.claimed", incident_id=incident.id, action_id=action.id,
                 data={"worker": deps.worker, "attempt": action.attempts, "resumed": resuming}, ts=now)
    if can_transition(incident.status, IncidentStatus.EXECUTING):
        transition(session, incident, IncidentStatus.EXECUTING, reason=f"running action {action.id} ({action.runbook})",
                   actor="executor", now=now)
    uow.commit()
    return action


def execute(uow_factory: Callable[[], UnitOfWork], *, action_id: int, deps: ExecutionDeps,
            dry_run: bool) -> ExecutionOutcome:
    """Run an approved action at most once across all workers (see the module docstring)."""
    with log_context(action_id=action_id), uow_factory() as uow:
        claimed = _claim(uow, action_id, deps, dry_run)
    if isinstance(claimed, ExecutionOutcome):
        return claimed
    action_row_id, incident_id, plan = claimed.id, claimed.incident_id, plan_of(claimed)

    def on_step(name: str, result: StepResult) -> None:
        with uow_factory() as step_uow:
            append_event(step_uow.session, actor="executor", kind="action.step", incident_id=incident_id,
                         action_id=action_row_id, data={"step": name, "ok": result.ok, "detail": result.detail,
                                                        "data": result.data}, ts=_now(deps))
            step_uow.commit()

    with log_context(incident_id=incident_id, action_id=action_row_id):
        ctx = runbook_context(deps, incident_id, "executor", on_step, action_id=action_row_id)
        result = deps.catalogue.execute(plan, ctx)
        verified = (deps.catalogue.verify(plan, ctx) if result.ok
                    else StepResult(False, "not verified: " + result.detail))
        rollback = None if verified.ok else deps.catalogue.rollback(plan, ctx)
        return _finish(uow_factory, action_row_id, plan, result, verified, rollback, deps)


def _finish(uow_factory: Callable[[], UnitOfWork], action_id: int, plan: Plan, result: StepResult,
            verified: StepResult, rollback: StepResult | None, deps: ExecutionDeps) -> ExecutionOutcome:
    now = _now(deps)
    with uow_factory() as uow:
        session = uow.session
        action = session.execute(select(Action).where(Action.id == action_id).with_for_update()).scalar_one()
        incident = action.incident
        action.result = {"execute": asdict(result), "verify": asdict(verified),
                         "rollback": asdict(rollback) if rollback else None}
        action.verified_at = now
        action.claim_expires_at = None
        if verified.ok:
            action.status = ActionStatus.SUCCEEDED
            if plan.runbook == "uncordon_node":
                for t in plan.targets:
                    if t.node:
                        release_node(session, node=t.node, now=now)
        else:
            action.status = ActionStatus.ROLLED_BACK if rollback is not None and rollback.ok else ActionStatus.FAILED
            action.error = verified.detail
            if rollback is not None and rollback.ok and plan.runbook in ("cordon_node", *RETURNS_ITS_NODE):
                release_node(session, node=plan.targets[0].node or "", now=now, action_id=action.id)
        append_event(session, actor="executor", kind=f"action.{action.status}", incident_id=incident.id,
                     action_id=action.id, data={"verify": verified.detail, "execute": result.detail,
                                                "rollback": rollback.detail if rollback else None}, ts=now)
        if verified.ok:
            _after_success(session, action, plan, result, deps, now)
        session.flush()
        record_verification(session, action=action, ok=verified.ok, config=deps.policy, now=now)
        if can_transition(incident.status, IncidentStatus.VERIFYING):
            transition(session, incident, IncidentStatus.VERIFYING, reason=f"action {action.id}: {action.status}",
                       actor="executor", now=now)
        follow_up = _follow_up(plan, result, verified)
        if not verified.ok and not follow_up and can_transition(incident.status, IncidentStatus.ESCALATED):
            transition(session, incident, IncidentStatus.ESCALATED,
                       reason=f"action {action.id} {action.status}: {verified.detail}", actor="executor", now=now)
        uow.commit()
        log.info("action finished", extra={"status": action.status, "verified": verified.ok})
        return ExecutionOutcome(action.id, action.status, verified.ok, verified.detail, follow_up)


def _follow_up(plan: Plan, result: StepResult, verified: StepResult) -> str:
    """The next rung of a remediation whose verification failed, where there is one: a GPU reset the node agent
    carried out but after which the node still offers fewer GPUs (the GPU did not come back) is followed by a
    reboot of the node, as an operator would before sending the GPU back to the vendor. Empty otherwise: the
    incident goes to a human as for any failed action."""
    if plan.runbook == "reset_gpu" and result.ok and not verified.ok and NOT_BACK in verified.data:
        return "reboot_node"
    return ""


def _after_success(session: Session, action: Action, plan: Plan, result: StepResult, deps: ExecutionDeps,
                   now: datetime) -> None:
    """What a verified action leaves to the store: the RMA request a ticket recorded, and the probation of the
    nodes a disruptive action took out (they return to service only once telemetry shows them healthy)."""
    if plan.runbook == "open_hardware_ticket":
        record_ticket(session, action=action, result_data=result.data, now=now)
    if plan.runbook in RETURNS_ITS_NODE:  # the node serves on: nothing to wait for, the lease goes back now
        record_isolated(session, action=action, now=now)
        for t in plan.targets:
            release_node(session, node=t.node or "", now=now, action_id=action.id)
    elif deps.catalogue.get(plan.runbook).disruptive:
        begin_probation(session, action=action, targets=plan.targets, config=deps.policy, now=now)
