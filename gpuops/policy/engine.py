"""Policy decisions. `evaluate` runs inside the caller's transaction and first locks the policy_state row,
so two workers deciding at the same moment are serialised: the second sees the first's node leases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from scipy.stats import poisson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain import ActionStatus, Budget, FindingKind, IncidentStatus, InvalidTarget, Target, is_corroborated, is_hard
from gpuops.policy.autoscale import AUTOSCALE_FAMILY
from gpuops.policy.config import PolicyConfig
from gpuops.policy.scope import scope_violations
from gpuops.store.audit import append_event
from gpuops.store.models import (
    Action,
    FindingRecord,
    HardwareTicket,
    Incident,
    NodeLease,
    NodeProbation,
    PolicyState,
    Silence,
)

POLICY_ROW = 1
MAINTENANCE_RULE = "maintenance_window"


class Gate(StrEnum):
    AUTO = "auto"                    # policy approves alone (low risk, configured)
    ONE_APPROVER = "one_approver"
    TWO_APPROVERS = "two_approvers"
    ESCALATE = "escalate"            # no automated action: a human takes the incident
    DENIED = "denied"                # not now (budget, rate, cool-down, freeze)


@dataclass(frozen=True)
class ActionSpec:
    """What policy needs to know about a proposed action (built from the runbook catalogue)."""

    runbook: str
    risk: str                        # low | medium | high
    disruptive: bool
    auto_approvable: bool
    target_keys: tuple[str, ...]
    target_nodes: tuple[str, ...]    # nodes the action takes capacity from, or touches
    pod_nodes: dict[str, str | None] = field(default_factory=dict)
    # For a runbook that takes only its GPU (its node's other pods keep running, its cordon lasts while it runs):
    # the healthy GPUs it takes from each node's count meanwhile, that GPU and those no pod holds. Absent: the
    # whole node's.
    gpus_taken: Mapping[str, int] = field(default_factory=dict)

    @property
    def nodes_taken(self) -> tuple[str, ...]:
        """The nodes this action takes out of service, for the nodes-out budget: its target nodes, short of those
        it takes only a GPU from (`gpus_taken`): such a node serves on with its other GPUs, and its cordon, which
        lasts while the action runs, only keeps new pods off meanwhile (held by a lease, so it counts for other
        actions while it runs). The healthy-GPU floor weighs what it takes."""
        return tuple(n for n in self.target_nodes if n not in self.gpus_taken)

    def taken_from(self, facts: FleetFacts, nodes: Iterable[str]) -> int:
        """The healthy GPUs this action takes out of service on `nodes` (see `gpus_taken`)."""
        return sum(min(self.gpus_taken[n], facts.healthy_on([n])) if n in self.gpus_taken else facts.healthy_on([n])
                   for n in nodes)


@dataclass(frozen=True)
class FleetFacts:
    """Live facts read from the cluster just before deciding."""

    nodes: int
    gpus: int
    healthy_gpus: int
    gpus_per_node: int
    unschedulable: frozenset[str] = frozenset()  # cordoned by anyone, or not Ready
    healthy_by_node: Mapping[str, int] = field(default_factory=dict)  # healthy GPUs of each node in service
    cordoned_by_others: frozenset[str] = frozenset()  # someone else's cordon: theirs to lift, never gpuops'

    def healthy_on(self, nodes: Iterable[str]) -> int:
        """The healthy GPUs taking `nodes` out would remove: a node whose GPU failed gives up only the rest (a
        node not reported counts in full)."""
        return sum(self.healthy_by_node.get(n, self.gpus_per_node) for n in nodes)


@dataclass
class Verdict:
    allowed: bool
    gate: Gate
    reasons: list[str]
    budget: Budget

    @property
    def approvals_required(self) -> int:
        return {Gate.AUTO: 0, Gate.ONE_APPROVER: 1, Gate.TWO_APPROVERS: 2}.get(self.gate, 0)

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "gate": self.gate.value, "reasons": list(self.reasons),
                "budget": self.budget.to_json(), "approvals_required": self.approvals_required}


def _lock(session: Session) -> PolicyState:
    return session.execute(select(PolicyState).where(PolicyState.id == POLICY_ROW).with_for_update()).scalar_one()


def _active_leases(session: Session) -> dict[str, int]:
    rows = session.execute(select(NodeLease.hostname, NodeLease.action_id).where(NodeLease.released_at.is_(None)))
    return {host: action_id for host, action_id in rows}


def _awaiting_repair(session: Session) -> set[str]:
    """Nodes a failed probation kept out of service with a hardware ticket (they wait for the humans)."""
    return set(session.scalars(select(NodeProbation.hostname).where(NodeProbation.status == "kept_out")))


def _waiting_for_repair(session: Session, unschedulable: frozenset[str]) -> set[str]:
    """Nodes out of service with a hardware ticket still open: their workloads are gone and the humans have been
    asked to repair them, so a further fault there changes nothing on the node (its ticket is amended)."""
    ticketed = set(session.scalars(select(HardwareTicket.hostname).where(HardwareTicket.status == "open")))
    return ticketed & set(unschedulable)


def _node_actions_since(session: Session, node: str, since: datetime) -> list[Action]:
    stmt = select(Action).where(Action.executed_at >= since, Action.status.in_(ActionStatus.EXECUTED))
    return [a for a in session.scalars(stmt) if any(_node_of(t) == node for t in a.targets)]


JOB_RESTARTS = frozenset({"restart_pod"})
# Runbooks that fence a GPU off (the driver's drain state), which `fence_gpus: false` forbids. The probation asks
# for `fence_gpu` only where fences are on; `isolate_gpu` is the agent's, so policy holds the line here.
FENCING = frozenset({"fence_gpu", "isolate_gpu"})
# Node actions that take nothing from a node: returning it to service, asking for its repair, keeping work across
# nodes off a port that waits for it, fencing off a GPU nothing runs on, on a node gpuops already holds out (so it
# can return with its other GPUs). The cool-down spaces disruptions, so a node just returned (after its probation
# or its repair) can be acted on at once.
NOT_DISRUPTING = frozenset({"uncordon_node", "untaint_node", "open_hardware_ticket", "fence_gpu", "taint_port"})


def _restarted_again(session: Session, incident: Incident, spec: ActionSpec, config: PolicyConfig,
                     now: datetime) -> list[str]:
    """Rule `job_restarts`: a job gpuops already restarted `job_restart_limit` times for other incidents within
    `job_restart_window_s` goes to a human before another restart: it stalls again after each one, so what
    stops it is not what a restart clears (a lasting failure under it, its own code, its data)."""
    job = (incident.details or {}).get("job")
    if spec.runbook not in JOB_RESTARTS or not isinstance(job, str) or not job or config.job_restart_window_s <= 0:
        return []
    rows = session.execute(select(Action.executed_at, Incident.id, Incident.details).join(Incident).where(
        Action.runbook.in_(JOB_RESTARTS), Action.status.in_(ActionStatus.EXECUTED), Incident.id != incident.id,
        Action.executed_at >= now - timedelta(seconds=config.job_restart_window_s)))
    earlier = [(at, incident_id) for at, incident_id, details in rows
               if isinstance(details, dict) and details.get("job") == job]
    incidents = {incident_id for _, incident_id in earlier}
    if len(incidents) < config.job_restart_limit:
        return []
    return [f"job_restarts: gpuops restarted {job} for {len(incidents)} other incidents within "
            f"{config.job_restart_window_s / 3600:.0f} h (last at {max(at for at, _ in earlier)}) and it stalled "
            "again: a human decides"]


def _node_of(target_key: str) -> str | None:
    """The node a node or GPU target names (None for other targets, and for a key that names nothing)."""
    try:
        return Target.parse(str(target_key)).node
    except InvalidTarget:
        return None


def _family_elsewhere(session: Session, incident: Incident, since: datetime) -> list[str]:
    """Other hosts where the incident's family stands corroborated since `since`: a hard finding (a fact), or a
    soft one that persisted into an incident of its own with a second signal agreeing. A suspicion elsewhere (a
    lone soft finding, an incident that was suppressed) never holds back a fact here; and when this incident is
    itself a fact, only facts elsewhere point to a common cause."""
    hard_here = is_hard(incident.family, incident.severity)
    rows = session.execute(select(FindingRecord.hostname, FindingRecord.severity, FindingRecord.evidence,
                                  Incident.status).outerjoin(Incident, FindingRecord.incident_id == Incident.id)
                           .where(FindingRecord.kind == incident.family, FindingRecord.ts >= since,
                                  FindingRecord.hostname != incident.hostname))
    rails = _fabric_rails(session, incident)

    def counts(severity: str, evidence: object, status: str | None) -> bool:
        if rails and not (isinstance(evidence, dict) and evidence.get("device") in rails):
            return False
        if is_hard(incident.family, severity, evidence):
            return True
        return (not hard_here and status is not None and status != IncidentStatus.SUPPRESSED
                and is_corroborated(evidence))

    return sorted({host for host, severity, evidence, status in rows if counts(severity, evidence, status)})


def _family_count(session: Session, family: str, since: datetime, until: datetime) -> int:
    """The family's incidents on one node each opened in [since, until): the fleet's own rate of independent
    faults of that family. A fleet event's incident, and the node incidents folded into one (a rollout), are not
    independent faults; suppressed ones were no faults."""
    return session.scalar(select(func.count()).select_from(Incident).where(
        Incident.family == family, Incident.scope != "fleet", Incident.hostname.is_not(None),
        Incident.parent_id.is_(None), Incident.status != IncidentStatus.SUPPRESSED,
        Incident.opened_at >= since, Incident.opened_at < until)) or 0


def _fabric_rails(session: Session, incident: Incident) -> set[str]:
    """The HCAs (rails) a fabric incident's own findings name. What the fabric shares between nodes is a switch,
    and in a rail-optimised fabric a switch serves one HCA index on every node: a switch fault shows on the same
    rail elsewhere, so only those findings point to a common cause. A link down on mlx5_3 here and a flapping
    mlx5_1 on another node are two cables, not one switch. Empty for other families (and for a fabric incident
    whose findings name no HCA), where every finding of the family elsewhere counts."""
    if incident.family != FindingKind.FABRIC:
        return set()
    evidence = session.scalars(select(FindingRecord.evidence).where(FindingRecord.incident_id == incident.id,
                                                                    FindingRecord.kind == FindingKind.FABRIC))
    return {str(e["device"]) for e in evidence if isinstance(e, dict) and e.get("device")}


def _maintenance(session: Session, spec: ActionSpec, now: datetime) -> list[str]:
    """Rule `maintenance_window`: gpuops takes no action at all on a node in a maintenance window (people are
    working on it), whatever the action; the reason names the window, its end and why it is there."""
    nodes = {*spec.target_nodes, *(n for n in spec.pod_nodes.values() if n)}
    if not nodes:
        return []
    windows = session.scalars(select(Silence).where(
        Silence.kind == "maintenance", Silence.hostname.in_(sorted(nodes)), Silence.starts_at <= now,
        Silence.ends_at > now).order_by(Silence.id))
    return [f"{MAINTENANCE_RULE}: {w.hostname} is in maintenance window {w.id} until {w.ends_at.isoformat()} "
            f"({w.reason or 'no reason given'}, by {w.created_by}); gpuops takes no action on it until then"
            for w in windows]


def _touches_cluster(targets: object) -> bool:
    return any(str(t) != "none" for t in (targets if isinstance(targets, list | tuple) else []))


def soak_until(incident: Incident, spec: ActionSpec, config: PolicyConfig) -> datetime | None:
    """When a disruptive node action for `incident` may first be proposed: `soak_s` of telemetry after the
    incident opened (the data time, not the wall clock), or None when nothing holds it (not a disruptive node
    action, a fleet incident, or the soak turned off). A bad driver rollout reaches nodes a minute or two
    apart: without the soak, the first node would be cordoned before the second showed the same fault."""
    if not (spec.disruptive and spec.target_nodes) or incident.scope == "fleet" or config.soak_s <= 0:
        return None
    return incident.opened_at + timedelta(seconds=config.soak_s)  # the store's datetimes are UTC-aware


def weigh_budget(*, spec: ActionSpec, facts: FleetFacts, config: PolicyConfig, out_now: set[str],
                 actions_last_hour: int) -> Budget:
    """The budgets if `spec` runs now, with `out_now` the nodes already out of service (gpuops' leases and
    anyone's cordons). Only a disruptive action takes nodes out, and one that takes only a GPU takes none
    (`ActionSpec.nodes_taken`); a node already out costs nothing more."""
    new_nodes = [n for n in spec.target_nodes if n not in out_now]
    return Budget(
        nodes_out=len(out_now),
        nodes_out_after=len(out_now | set(spec.nodes_taken)) if spec.disruptive else len(out_now),
        nodes_out_limit=config.nodes_out_limit(facts.nodes),
        healthy_gpus_after=facts.healthy_gpus - (spec.taken_from(facts, new_nodes) if spec.disruptive else 0),
        min_healthy_gpus=config.min_healthy_gpus(facts.gpus, facts.gpus_per_node),
        actions_last_hour=actions_last_hour, rate_limit=config.max_actions_per_hour,
        fleet_nodes=facts.nodes, max_nodes_out=config.max_nodes_out,
        max_nodes_out_fraction=config.max_nodes_out_fraction, fleet_gpus=facts.gpus,
        min_healthy_gpu_fraction=config.min_healthy_gpu_fraction)


def budget_wait(session: Session, *, spec: ActionSpec, facts: FleetFacts, config: PolicyConfig) -> str | None:
    """Why a disruptive node action should wait rather than go to a human: the nodes-out budget or the
    healthy-GPU minimum refuses it now, and it would fit once the nodes gpuops itself has out come back (its
    own leases, short of nodes kept out for repair: a remediation in flight or a probation ends by itself).
    None when nothing refuses it, when waiting cannot help (the budget is spent on nodes someone else cordoned,
    or on nodes waiting for repair), or when the wait is turned off. Reads only; `evaluate` still decides."""
    if not (spec.disruptive and spec.target_nodes) or config.budget_wait_s <= 0:
        return None
    repair = _awaiting_repair(session)
    own = set(_active_leases(session)) - repair
    out_now = (own | set(facts.unschedulable)) - repair
    if not [n for n in spec.target_nodes if n not in out_now]:
        return None
    now_budget = weigh_budget(spec=spec, facts=facts, config=config, out_now=out_now, actions_last_hour=0)
    if not _over_budget(now_budget):
        return None
    returning = own - set(spec.target_nodes)
    back = FleetFacts(nodes=facts.nodes, gpus=facts.gpus, gpus_per_node=facts.gpus_per_node,
                      healthy_gpus=min(facts.gpus, facts.healthy_gpus + len(returning) * facts.gpus_per_node),
                      unschedulable=facts.unschedulable - returning, healthy_by_node=facts.healthy_by_node,
                      cordoned_by_others=facts.cordoned_by_others)
    if _over_budget(weigh_budget(spec=spec, facts=back, config=config, out_now=out_now - returning,
                                 actions_last_hour=0)):
        return None
    return (f"{now_budget.nodes_out} node(s) out (limit {now_budget.nodes_out_limit}), "
            f"{now_budget.healthy_gpus_after} healthy GPUs would remain (minimum {now_budget.min_healthy_gpus}); "
            f"gpuops' own {', '.join(sorted(returning))} come(s) back after remediation and probation")


def _over_budget(budget: Budget) -> bool:
    return _over_nodes_out(budget) or budget.healthy_gpus_after < budget.min_healthy_gpus


def _over_nodes_out(budget: Budget) -> bool:
    """The action takes a node out past the nodes-out limit (one that takes none never breaks it)."""
    return budget.nodes_out_after > max(budget.nodes_out, budget.nodes_out_limit)


def evaluate(session: Session, *, incident: Incident, action: Action, spec: ActionSpec, facts: FleetFacts,
             config: PolicyConfig, now: datetime, reserve: bool = False, actor: str = "policy") -> Verdict:
    """Decide on `action` for `incident`. With `reserve=True` (at execution time) an allowed disruptive action
    also takes leases on its nodes, in the same locked transaction. Every verdict is audited."""
    state = _lock(session)
    leases = _active_leases(session)
    escalate: list[str] = []
    deny: list[str] = []

    if state.breaker_open:
        escalate.append(f"circuit breaker open since {state.breaker_opened_at}: {state.breaker_reason}")
    scope = scope_violations(incident, list(spec.target_keys), spec.pod_nodes)
    if incident.scope == "fleet" and scope:
        escalate.extend(scope)
    else:
        deny.extend(scope)
    if spec.runbook in FENCING and not config.fence_gpus:
        deny.append(f"{spec.runbook} fences a GPU off, and fences are off (fence_gpus: false)")
    window = config.frozen_at(now)
    if window and spec.disruptive:
        deny.append(f"freeze window until {window.ends_at.isoformat()}: {window.reason or 'no reason given'}")
    deny.extend(_maintenance(session, spec, now))

    # A node gpuops keeps out on a hardware ticket is broken capacity waiting for repair, not disruption in
    # flight: it no longer holds the nodes-out budget (its GPUs still count against the healthy minimum).
    out_now = (set(leases) | set(facts.unschedulable)) - _awaiting_repair(session)
    new_nodes = [n for n in spec.target_nodes if n not in out_now]  # a node already out costs nothing more
    # The rate limit is on actions that touch the cluster: telling people (target `none`) is never rationed.
    # The autoscaler's replica changes have their own policy (gpuops.policy.autoscale) and never spend this one.
    executed_last_hour = sum(1 for targets in session.scalars(select(Action.targets).join(Incident).where(
        Action.executed_at >= now - timedelta(hours=1), Incident.family != AUTOSCALE_FAMILY))
        if _touches_cluster(targets))
    budget = weigh_budget(spec=spec, facts=facts, config=config, out_now=out_now,
                          actions_last_hour=int(executed_last_hour))
    if spec.disruptive and new_nodes:
        if _over_nodes_out(budget):
            deny.append(f"budget: {budget.nodes_out} node(s) already out, limit {budget.nodes_out_limit} "
                        f"({config.max_nodes_out} or {config.max_nodes_out_fraction:.0%} of {facts.nodes})")
        if budget.healthy_gpus_after < budget.min_healthy_gpus:
            deny.append(f"budget: {budget.healthy_gpus_after} healthy GPUs would remain, "
                        f"minimum {budget.min_healthy_gpus}")

    # Only taking nodes out waits on a common cause; returning one (gpuops' own uncordon) never does.
    if spec.disruptive and spec.target_nodes and incident.scope != "fleet" and config.common_cause_window_s > 0:
        since = now - timedelta(seconds=config.common_cause_window_s)
        elsewhere = _family_elsewhere(session, incident, since)
        earlier = _family_count(session, incident.family, since - timedelta(seconds=config.common_cause_baseline_s),
                                since) if elsewhere else 0
        expected = earlier * config.common_cause_window_s / config.common_cause_baseline_s
        # the chance of at least this many other hosts in the window, were the family's faults independent
        chance = float(poisson.sf(len(elsewhere) - 1, expected)) if expected > 0 else 0.0
        if elsewhere and chance <= config.common_cause_max_chance:
            days = f"{config.common_cause_baseline_s / 86400:g} days"
            odds = (f"by chance, at this fleet's rate of {earlier} {incident.family} incident(s) in {days}, "
                    f"{chance:.2g}" if earlier else
                    f"this fleet had no other {incident.family} incident in the {days} before, so no rate of chance")
            escalate.append(f"common cause suspected: {incident.family} also on {', '.join(elsewhere[:5])} within "
                            f"{config.common_cause_window_s:.0f}s (a rollout or an environment event reaches nodes "
                            f"one by one; {odds}): a human decides before gpuops acts on nodes")

    waiting_for_repair = _waiting_for_repair(session, facts.unschedulable) if spec.target_nodes else set()
    for node in spec.target_nodes:
        recent = _node_actions_since(session, node, now - timedelta(seconds=config.repeat_window_s))
        other_incidents = {a.incident_id for a in recent if a.incident_id != incident.id}
        if len(other_incidents) >= config.repeat_limit:
            escalate.append(f"repeat_limit: {node} was remediated for {len(other_incidents)} other incidents within "
                            f"{config.repeat_window_s / 86400:.0f} days: a human decides")
        cooling = [a for a in recent if a.incident_id != incident.id and a.executed_at is not None
                   and a.executed_at >= now - timedelta(seconds=config.node_cooldown_s)
                   and a.runbook not in NOT_DISRUPTING]
        # the cool-down keeps a node in service from being disrupted again too soon; a node already out and
        # waiting for repair serves nothing to disrupt
        if cooling and node not in waiting_for_repair:
            deny.append(f"cool-down: {node} had action {cooling[-1].id} at {cooling[-1].executed_at}")

    escalate.extend(_restarted_again(session, incident, spec, config, now))

    if executed_last_hour >= config.max_actions_per_hour and action.executed_at is None \
            and _touches_cluster(spec.target_keys) and incident.family != AUTOSCALE_FAMILY:
        deny.append(f"rate limit: {executed_last_hour} actions in the last hour, limit {config.max_actions_per_hour}")

    if escalate:
        gate = Gate.ESCALATE
    elif deny:
        gate = Gate.DENIED
    elif spec.risk == "low" and spec.auto_approvable and spec.runbook in config.auto_approve:
        gate = Gate.AUTO
    elif spec.risk == "high":
        gate = Gate.TWO_APPROVERS
    else:
        gate = Gate.ONE_APPROVER
    reasons = escalate + deny or [f"within budgets; {spec.risk} risk → {gate.value}"]
    verdict = Verdict(allowed=gate not in (Gate.ESCALATE, Gate.DENIED), gate=gate, reasons=reasons, budget=budget)
    if verdict.allowed and reserve and spec.disruptive:
        # gpuops holds every node it takes out, a NotReady one too (it returns that node after its probation, so
        # a budget spent on it can be waited for); a node someone else cordoned stays theirs
        for node in spec.target_nodes:
            if node not in leases and node not in facts.cordoned_by_others:
                session.add(NodeLease(hostname=node, action_id=action.id, reason=spec.runbook, acquired_at=now))
    append_event(session, actor=actor, kind="policy.verdict", incident_id=incident.id, action_id=action.id,
                 data={"runbook": spec.runbook, "targets": list(spec.target_keys), "reserve": reserve,
                       **verdict.to_json()}, ts=now)
    return verdict


def release_node(session: Session, *, node: str, now: datetime, action_id: int | None = None) -> int:
    """Release gpuops' leases on `node` (it returned the node to service). Returns how many."""
    stmt = select(NodeLease).where(NodeLease.hostname == node, NodeLease.released_at.is_(None))
    if action_id is not None:
        stmt = stmt.where(NodeLease.action_id == action_id)
    released = 0
    for lease in session.scalars(stmt):
        lease.released_at = now
        released += 1
    return released


def record_verification(session: Session, *, action: Action, ok: bool, config: PolicyConfig,
                        now: datetime) -> bool:
    """Count a verification; open the breaker after `breaker_failures` failures in the window.
    Returns True when this call opened the breaker."""
    state = _lock(session)
    if ok or state.breaker_open:
        return False
    failures = session.scalar(
        select(func.count()).select_from(Action).where(
            Action.status.in_(ActionStatus.VERIFICATION_FAILED),
            Action.verified_at >= now - timedelta(seconds=config.breaker_window_s),
        )
    ) or 0
    if failures >= config.breaker_failures:
        state.breaker_open = True
        state.breaker_opened_at = now
        state.breaker_reason = f"{failures} failed verifications within {config.breaker_window_s:.0f}s"
        append_event(session, actor="policy", kind="policy.breaker_opened", action_id=action.id,
                     data={"failures": int(failures)}, ts=now)
        return True
    return False


@dataclass(frozen=True)
class BreakerReset:
    """What `reset_breaker` found and did: the breaker's state before (open, since when, why), and the refusal
    when the identity may not reset it (a result, not an exception, so the caller commits its audit record)."""

    actor: str
    reason: str
    was_open: bool
    opened_at: datetime | None
    opened_because: str
    refusal: str | None = None

    @property
    def closed(self) -> bool:
        """This reset closed a breaker that was open."""
        return self.was_open and self.refusal is None

    def to_json(self) -> dict[str, Any]:
        return {"actor": self.actor, "reason": self.reason, "was_open": self.was_open,
                "opened_at": self.opened_at.isoformat() if self.opened_at else None,
                "opened_because": self.opened_because, "closed": self.closed, "refusal": self.refusal}


def reset_breaker(session: Session, *, actor: str, reason: str, authorised: bool,
                  now: datetime) -> BreakerReset:
    """A human closes the breaker after looking into the failures. Only an authenticated person whose role may
    decide (`authorised`) may; either way the audit trail records who, why, and the state the breaker was in."""
    state = _lock(session)
    allowed = authorised
    found = BreakerReset(actor=actor, reason=reason, was_open=state.breaker_open,
                         opened_at=state.breaker_opened_at if state.breaker_open else None,
                         opened_because=state.breaker_reason,
                         refusal=None if allowed else f"{actor} is not allowed to reset the circuit breaker "
                                                      "(only dashboard users with role approver or admin in "
                                                      "GPUOPS_USERS are)")
    if allowed:
        state.breaker_open = False
        state.breaker_reason = ""
    append_event(session, actor=actor, kind="policy.breaker_reset" if allowed else "policy.breaker_reset_refused",
                 data=found.to_json(), ts=now)
    return found
