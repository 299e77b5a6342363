"""Return to service. A node on probation (see `gpuops.execution.probation`) is examined once its probation is
over in examined data time, or at once when a new error shows on it:

- the fault must be one its remediation fixes: a double-bit ECC error or a GSP timeout is cleared by a GPU reset
  or a reboot, a GPU off the bus by a reboot; a row-remap failure, an SBE storm, a cooling or PCIe fault needs the
  GPU replaced, and a drain alone fixes nothing (it only moved the work away); and the fix must hold: the same
  part back on probation within the repeat window after gpuops returned it once (a double-bit error recurring
  after its row was remapped) is a failing part, kept out for replacement;
- nothing new on the node since the remediation: no hardware finding, no other incident;
- the node is Ready and reports all its GPUs allocatable;
- a node agent's diagnostic, when one is wired (`NodeDiagnostics`: a NodeValidation request running DCGM diag).

On a pass gpuops proposes `uncordon_node` (policy, approval and audit as for any action; it only ever lifts
gpuops' own cordon), and the executor releases the node's lease when it is verified. On a failure the node
stays out, the incident is escalated naming the failed checks, and an `open_hardware_ticket` action records the
RMA request. The incident's timeline and the audit trail say which and why.

One failure returns the node all the same: a one-GPU fault whose GPU the device plugin withholds (it marks a GPU
unhealthy after a non-application XID, a GPU off the bus is not there to give, and gpuops may have fenced it
off) while the rest of the node passes. The node returns with its other GPUs, the withheld one on an RMA request:
no new pod can be given that GPU, and an 8-GPU node earns with 7 for the days the replacement takes instead of
with none. It needs the node to withhold exactly one GPU, the incident's (allocatable one short of capacity; a
node agent's diagnostic of the other GPUs where one is wired), and nothing else to fail but the fault's own fix.

A GPU that needs replacing but that the device plugin still gives to pods (a thermal runaway of its cooling, a PCIe
replay storm, an SBE storm, a GPU whose fix did not hold) is fenced off first: the probation proposes `fence_gpu`
(the node agent puts the GPU in the driver's drain state and restarts the device plugin), and once that is
verified the node is examined again, one GPU short, and returns without it as above. A fence that fails or is
refused leaves the node out, as before. A reboot lifts a fence: a GPU the node had returned without and that is
offered again is fenced before the node returns from its next probation.

A node whose one InfiniBand port waits for a new cable, transceiver or HCA, with nothing else wrong, returns
under the NoSchedule taint `gpuops.io/fabric-degraded=<HCA>`: work that tolerates it (work that stays inside the
node, whose traffic never crosses the port) may land there, and multi-node jobs, whose collectives would run at
that port's pace, keep away. The port's ticket stays open; findings on that port are filed with its incident;
once the humans repaired it and the node passed its probation again, the taint is lifted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.kubernetes.errors import ClusterError
from domain import ActionStatus, IncidentStatus, Target, is_corroborated
from gpuops.detection import examined_until
from gpuops.errors import NotFound
from gpuops.execution import probation as store
from gpuops.execution.service import ExecutionDeps, Proposal, propose
from gpuops.incidents.lifecycle import can_transition, transition
from gpuops.policy import release_node
from gpuops.store.models import Action, FindingRecord, HardwareTicket, Incident, NodeProbation
from gpuops.store.uow import UnitOfWork
from runbooks import Plan

PLANNER = "probation"
HARDWARE_KINDS = frozenset({"xid", "gpu_lost", "ecc", "row_remap", "thermal", "nvlink", "pcie", "power",
                            "node_not_ready", "fabric"})
RESET_OR_REBOOT = frozenset({"reset_gpu", "reboot_node"})
REBOOT = frozenset({"reboot_node"})
REPLACE: frozenset[str] = frozenset()  # no runbook fixes it: the GPU goes back to the vendor
RETRY_AFTER_S = 300.0
DBE, ROW_REMAP_FAILURE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ROW_REMAP_FAILURE"


@dataclass(frozen=True)
class Check:
    """One probation check: its name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str
    pending: bool = False
    """Not decided yet (a diagnostic still running): the probation waits and is examined again."""


class NodeDiagnostics(Protocol):
    """A node agent's diagnostic of a node's GPUs (a NodeValidation request: DCGM diag, a short burn-in). Without
    one, the probation's telemetry and cluster checks alone decide. It must not block: a diagnostic not finished
    yet is a `pending` check, and the sweep examines the probation again."""

    def diagnose(self, node: str, *, gpus: Sequence[int], request_id: str = "") -> list[Check]:
        """The diagnostic's checks for `gpus` on `node` (all of them when empty); `request_id` names this
        examination's request, so asking again finds the same one."""
        ...


@dataclass(frozen=True)
class ProbationOutcome:
    """Where a probation stands after a step: its status, why, and the action it waits for (uncordon or ticket)
    with that action's status; `proposed` when this very step proposed it."""

    probation_id: int
    status: str
    reason: str
    action_id: int | None = None
    action_status: str | None = None
    proposed: bool = False


# -- the fault ------------------------------------------------------------------------------------------------


def fault_of(incident: Incident) -> tuple[str, frozenset[str] | None]:
    """The incident's fault in words, and the runbooks that fix it: empty when none does (the GPU needs
    replacing), None when the fault is not a known hardware fault (telemetry alone decides)."""
    evidence: dict[str, Any] = {}
    for finding in sorted(incident.findings, key=lambda f: f.ts):
        evidence.update(finding.evidence or {})
    xid, metric, family = evidence.get("xid"), evidence.get("metric"), incident.family
    if family == "row_remap" or xid == 64 or metric == ROW_REMAP_FAILURE or _positive(evidence, ROW_REMAP_FAILURE):
        return "row-remap failure", REPLACE
    if family == "thermal":
        return "thermal runaway (cooling)", REPLACE
    if family == "pcie":
        return "PCIe replay storm", REPLACE
    if family == "ecc" and metric != DBE and xid != 48 and not _positive(evidence, "dbe"):
        return "single-bit ECC storm", REPLACE
    if xid == 79 or family == "gpu_lost":
        return "GPU fell off the bus (XID 79)", REBOOT
    if family == "node_not_ready":
        return "node not Ready", REBOOT
    if xid == 48 or metric == DBE or family == "ecc":
        return "double-bit ECC error (XID 48)", RESET_OR_REBOOT
    if xid in (119, 120):
        return f"GSP timeout (XID {xid})", RESET_OR_REBOOT
    if xid == 74 or family == "nvlink":
        return "NVLink errors", RESET_OR_REBOOT
    if family == "fabric":
        return "InfiniBand link fault (cable, transceiver or HCA)", REPLACE
    return incident.family, None


def _positive(evidence: dict[str, Any], key: str) -> bool:
    value = evidence.get(key)
    return isinstance(value, int | float) and value > 0


def fault_check(session: Session, p: NodeProbation, window_s: float) -> Check:
    """Whether the remediation that ran is one that fixes the incident's fault, and held: the same fault on the
    same part after an earlier return to service within `window_s` needs the part replaced."""
    incident = session.get(Incident, p.incident_id)
    if incident is None:
        return Check("fault_fixed", False, f"incident {p.incident_id} is gone")
    fault, fixers = fault_of(incident)
    if p.reason.startswith(store.REPAIR_REASON):
        return Check("fault_fixed", True, f"{fault}: {p.reason}")
    done = [a.runbook for a in incident.actions if a.status == ActionStatus.SUCCEEDED]
    if fixers is None:
        return Check("fault_fixed", True, f"{fault}: no hardware fault known; telemetry decides")
    if not fixers:
        part = "the GPU" if incident.family != "fabric" else "the part"
        return Check("fault_fixed", False, f"{fault}: no remediation fixes it; {part} needs replacing")
    if not fixers & set(done):
        return Check("fault_fixed", False, f"{fault} needs {' or '.join(sorted(fixers))}; only "
                                           f"{', '.join(done) or 'nothing'} ran, which moved the work away")
    came_back = _returned_before(session, p, window_s)
    if came_back is not None:
        part = p.hostname if p.gpu is None else f"{p.hostname} GPU {p.gpu}"
        return Check("fault_fixed", False, f"{part} failed again ({fault}) after gpuops returned it to service "
                                           f"on {came_back.isoformat()}: the fix does not hold, the part needs "
                                           "replacing")
    return Check("fault_fixed", True, f"{fault}: fixed by {', '.join(sorted(fixers & set(done)))}")


def beyond_fixing(session: Session, p: NodeProbation) -> bool:
    """Whether the probation's fault is one no remediation fixes (the part goes back to the vendor) and no
    repair came since: watching the node for the probation's length can only confirm that it stays out, while
    it holds the disruption budget for the next node's remediation. Such a probation is decided as soon as the
    incident's plan is done."""
    if p.reason.startswith(store.REPAIR_REASON):
        return False
    incident = session.get(Incident, p.incident_id)
    return incident is not None and fault_of(incident)[1] == REPLACE


def _returned_before(session: Session, p: NodeProbation, window_s: float) -> datetime | None:
    """When gpuops last returned this GPU (or, for a node-wide fault, this node) to service after an earlier
    remediation within `window_s`: a fault that comes back on the same part after its fix held through a
    probation is a failing part (a double-bit error recurring after its row was remapped), not a new accident."""
    def last(*statuses: str) -> datetime | None:
        return session.scalars(select(NodeProbation.finished_at).where(
            NodeProbation.hostname == p.hostname, NodeProbation.gpu.is_(None) if p.gpu is None
            else NodeProbation.gpu == p.gpu, NodeProbation.id != p.id, NodeProbation.status.in_(statuses),
            NodeProbation.finished_at >= p.started_at - timedelta(seconds=window_s),
            NodeProbation.finished_at <= p.started_at).order_by(NodeProbation.finished_at.desc()).limit(1)).first()

    returned, repaired = last(store.RETURNED, store.RELEASED), last(store.REPAIRED)
    return returned if returned is not None and (repaired is None or repaired < returned) else None


# -- what showed since the remediation ------------------------------------------------------------------------


def new_errors(session: Session, p: NodeProbation, held: store.HeldBack | None = None) -> list[Check]:
    """Hardware findings and other incidents on the node since its probation started (empty when none). A
    suspicion no second signal confirmed (a node's exporter falling silent for a scrape or two) is not an error,
    and neither is what a GPU the node returned to service without goes on reporting while it waits for repair
    (those GPUs besides the probation's own), nor what a port waiting for its repair reports. `held`: what the node
    serves without, read from the store when not given."""
    held = held if held is not None else store.held_back(session, p.hostname)
    skip = set(held.gpus) - {p.gpu}
    # Ports on a ticket (the node serving under a taint), and the probation's own: a cable, a transceiver or an
    # HCA goes on failing until it is replaced, which the probation knows already.
    ports = set(held.port_incidents()) | {_port_of(session, p)} - {None}
    findings = [f for f in session.scalars(select(FindingRecord).where(
        FindingRecord.hostname == p.hostname, FindingRecord.ts > p.started_at,
        FindingRecord.kind.in_(HARDWARE_KINDS), FindingRecord.severity != "info")
        .order_by(FindingRecord.ts).limit(200)) if is_corroborated(f.evidence) and f.gpu not in skip
        and not (f.kind == "fabric" and f.gpu is None and (f.evidence or {}).get("device") in ports)][:5]
    incidents = session.scalars(select(Incident).where(
        Incident.hostname == p.hostname, Incident.opened_at > p.started_at, Incident.id != p.incident_id)
        .order_by(Incident.id).limit(5)).all()
    checks = []
    if findings:
        seen = "; ".join(f"{f.kind} on GPU {f.gpu} at {f.ts.isoformat()}" for f in findings)
        checks.append(Check("no_new_errors", False, f"new hardware findings since the remediation: {seen}"))
    if incidents:
        seen = "; ".join(f"incident {i.id} ({i.family})" for i in incidents)
        checks.append(Check("no_new_incidents", False, f"new incidents on {p.hostname}: {seen}"))
    return checks


def node_checks(deps: ExecutionDeps, node: str, withheld: Sequence[int] = ()) -> list[Check]:
    """The node is Ready and reports every GPU allocatable (the device plugin sees them all), short of the GPUs
    `withheld` already, which it returned to service without and which wait for their repair."""
    try:
        info = deps.cluster.get_node(node)
    except ClusterError as exc:
        return [Check("node_ready", False, f"{node} cannot be read: {exc}")]
    ready = Check("node_ready", info.ready is True, f"{node} is {'Ready' if info.ready else 'not Ready'}")
    already = f" (GPU {', '.join(map(str, withheld))} withheld, waiting for repair)" if withheld else ""
    gpus = Check("gpus_present", info.gpu_allocatable >= info.gpu_capacity - len(withheld),
                 f"{info.gpu_allocatable}/{info.gpu_capacity} GPUs allocatable{already}")
    return [ready, gpus]


def _thread_busy(session: Session, p: NodeProbation) -> bool:
    """Whether the incident's own plan is still under way (an action not yet finished, or the agent working)."""
    incident = session.get(Incident, p.incident_id)
    if incident is not None and incident.status in (IncidentStatus.OPEN, IncidentStatus.INVESTIGATING,
                                                    IncidentStatus.AWAITING_APPROVAL, IncidentStatus.EXECUTING):
        return True
    return session.scalar(select(Action.id).where(
        Action.incident_id == p.incident_id, Action.status.in_(ActionStatus.OPEN | ActionStatus.RUNNING),
        Action.id.not_in([i for i in (p.return_action_id, p.ticket_action_id, p.fence_action_id)
                          if i is not None])).limit(1)) is not None


# -- the sweep's question and the step ------------------------------------------------------------------------


def due_probations(session: Session, *, shards: int, now: datetime) -> list[int]:
    """Probations with something to do: over in examined data time, or with a new error on the node; and those
    whose uncordon or ticket action was decided, is left unclaimed by a dead executor, or has finished."""
    seen = _ts(examined_until(session, shards))
    due = []
    for p in session.scalars(select(NodeProbation).where(NodeProbation.status.in_(store.ACTIVE))
                             .order_by(NodeProbation.id)):
        if p.status == store.PROBATION:
            if (seen is not None and seen >= p.due_at) or new_errors(session, p) or (
                    beyond_fixing(session, p) and not _thread_busy(session, p)):
                due.append(p.id)
            continue
        action = session.get(Action, _action_of(p))
        if action is None or action.status not in (ActionStatus.AWAITING_APPROVAL, *ActionStatus.RUNNING) or (
                action.status in ActionStatus.RUNNING and action.claim_expires_at is not None
                and action.claim_expires_at <= now):
            due.append(p.id)
    return due


def examine(uow: UnitOfWork, *, probation_id: int, deps: ExecutionDeps, shards: int,
            diagnostics: NodeDiagnostics | None = None) -> ProbationOutcome:
    """Decide a probation that is due: return the node (propose its uncordon), or keep it out (escalate, propose
    a ticket). A probation not yet over, or past this point, is answered as it stands. Runs in the caller's
    transaction."""
    session = uow.session
    p = session.execute(select(NodeProbation).where(NodeProbation.id == probation_id).with_for_update()
                        ).scalar_one_or_none()
    if p is None:
        raise NotFound(f"probation {probation_id} does not exist")
    if p.status != store.PROBATION:
        return _standing(session, p)
    held = store.held_back(session, p.hostname)
    withheld = {g: w for g, w in held.gpus.items() if g != p.gpu}
    already = sorted(withheld)
    errors = new_errors(session, p, held)
    if not errors:
        seen = _ts(examined_until(session, shards))
        if (seen is None or seen < p.due_at) and not beyond_fixing(session, p):
            return ProbationOutcome(p.id, p.status, f"on probation until data time {p.due_at.isoformat()} is "
                                                    f"examined (examined: {seen.isoformat() if seen else 'nothing'})")
        if _thread_busy(session, p):
            return ProbationOutcome(p.id, p.status, f"incident {p.incident_id}'s plan is still under way")
    checks = errors or [fault_check(session, p, deps.policy.repeat_window_s),
                        *node_checks(deps, p.hostname, already)]
    if diagnostics is not None and all(c.ok for c in checks):  # a node failing already is not diagnosed
        checks += diagnostics.diagnose(p.hostname, gpus=[],  # every GPU, whatever part the fault was on
                                       request_id=f"p{p.id}-{int(p.started_at.timestamp())}")
        waiting = [c for c in checks if c.pending]
        if waiting:
            return ProbationOutcome(p.id, p.status, "; ".join(c.detail for c in waiting))
    failed = [c for c in checks if not c.ok]
    if failed and not errors and _fenceable(session, deps, p, checks):
        p.checks = [asdict(c) for c in checks]
        return _fence(uow, p, deps)
    again = _offered_again(session, deps, p, withheld) if not failed else None
    if again is not None:
        p.checks = [asdict(c) for c in checks]
        return _fence(uow, p, deps, again=withheld[again])
    port = _degraded_port(session, deps, p, failed) if failed and not errors else None
    if port is not None:
        checks.append(Check(store.PORT_WITHHELD, True, f"InfiniBand {port} waits for its repair: {p.hostname} serves "
                                                       f"work that stays inside the node meanwhile, under the "
                                                       f"NoSchedule taint {store.PORT_TAINT}={port}"))
        if diagnostics is not None:  # the GPUs the node returns with: all of them
            checks += diagnostics.diagnose(p.hostname, gpus=[],
                                           request_id=f"p{p.id}-{int(p.started_at.timestamp())}-port")
            waiting = [c for c in checks if c.pending]
            if waiting:
                return ProbationOutcome(p.id, p.status, "; ".join(c.detail for c in waiting))
        failed = [c for c in checks if not c.ok and c.name not in store.PORT_EXCUSES]
    found = _withheld_gpu(session, deps, p, failed, already) if failed and not errors and port is None else None
    if found is not None:
        checks.append(found[0])
        if diagnostics is not None:  # the GPUs the node returns with
            others = [g for g in range(found[1]) if g != p.gpu and g not in already]
            checks += diagnostics.diagnose(p.hostname, gpus=others,
                                           request_id=f"p{p.id}-{int(p.started_at.timestamp())}-rest")
            waiting = [c for c in checks if c.pending]
            if waiting:
                return ProbationOutcome(p.id, p.status, "; ".join(c.detail for c in waiting))
        failed = [c for c in checks if not c.ok and c.name not in store.WITHHELD_EXCUSES]
    p.checks = [asdict(c) for c in checks]
    if failed:
        return _keep_out(uow, p, failed, deps, already)
    if found is not None and _gpu_ticket(session, p) is None:
        return _ticket_then_return(uow, p, deps)
    if port is not None and _incident_ticket(session, p) is None:
        return _ticket_then_return(uow, p, deps)
    return _return(uow, p, deps)


def _withheld_gpu(session: Session, deps: ExecutionDeps, p: NodeProbation, failed: list[Check],
                  already: Sequence[int]) -> tuple[Check, int] | None:
    """A passing check saying the device plugin withholds the incident's one GPU, and the node's GPU capacity,
    when that is all that failed: the probation's GPU is known, the node is one GPU short (besides the GPUs
    `already` withheld, waiting for their repair), no other check failed, the incident is gpuops' still (not
    handed to a human), and the GPU needs replacing or got the fix its fault takes. None otherwise."""
    if p.gpu is None or not failed or any(c.name not in store.WITHHELD_EXCUSES for c in failed):
        return None
    if p.reason.startswith(store.REPAIR_REASON):
        return None  # a node the humans repaired comes back whole, or they hear that the repair did not take
    incident = session.get(Incident, p.incident_id)
    if incident is None or incident.status == IncidentStatus.ESCALATED:
        return None  # handed to a human: the node is theirs to return
    fixers, done = fault_of(incident)[1], {a.runbook for a in incident.actions if a.status == ActionStatus.SUCCEEDED}
    if fixers and not fixers & done:
        return None  # a reset or a reboot may well fix the GPU, and it did not run: no RMA for it unasked
    if not any(c.name == "gpus_present" for c in failed):
        return None  # the GPU is still given to pods: the node cannot return with it
    try:
        info = deps.cluster.get_node(p.hostname)
    except ClusterError:
        return None
    if info.ready is not True or info.gpu_capacity - info.gpu_allocatable != 1 + len(already):
        return None
    return Check(store.WITHHELD, True, f"GPU {p.gpu} is {_held_back(p)} ({info.gpu_allocatable}/"
                                 f"{info.gpu_capacity} allocatable): {p.hostname} returns with the other "
                                 f"{info.gpu_allocatable}, GPU {p.gpu} on a hardware ticket"), info.gpu_capacity


def _degraded_port(session: Session, deps: ExecutionDeps, p: NodeProbation, failed: list[Check]) -> str | None:
    """The InfiniBand port (HCA name) the node may return without, under a taint, when that is all that keeps it
    out: the incident is one port's (a cable, transceiver or HCA fault) and gpuops' still (not handed to a human),
    its fix is all that failed (the node is Ready with every GPU, nothing new showed), and no repair came since.
    None otherwise, or where policy keeps such nodes out (`return_without_port: false`)."""
    incident = _fault_alone(session, p, failed) if deps.policy.return_without_port else None
    return store.incident_port(incident) if incident is not None else None


def _fault_alone(session: Session, p: NodeProbation, failed: list[Check]) -> Incident | None:
    """The probation's incident when the fault's own fix is all that failed, no repair came since, and the
    incident is gpuops' still (not handed to a human); None otherwise."""
    if [c.name for c in failed] != ["fault_fixed"] or p.reason.startswith(store.REPAIR_REASON):
        return None
    incident = session.get(Incident, p.incident_id)
    return incident if incident is not None and incident.status != IncidentStatus.ESCALATED else None


def _incident_ticket(session: Session, p: NodeProbation) -> HardwareTicket | None:
    """An RMA request still open that the probation's incident opened."""
    return session.scalars(select(HardwareTicket).where(
        HardwareTicket.hostname == p.hostname, HardwareTicket.status == "open",
        HardwareTicket.incident_id == p.incident_id).order_by(HardwareTicket.id.desc())).first()


def _fenceable(session: Session, deps: ExecutionDeps, p: NodeProbation, checks: list[Check]) -> bool:
    """Whether the probation's GPU should be fenced off so that the node can return with its other GPUs: the fault
    is one GPU's and needs the part replaced (a fault no remediation fixes, or one whose fix did not hold: the same
    GPU failing again after gpuops returned it; not a port's: a fabric fault is the HCA's, which a fence does not
    touch), its fix is all that failed, the device plugin still gives that GPU to pods, the incident is gpuops'
    still, and no fence was tried for this probation yet."""
    if not deps.policy.fence_gpus or p.gpu is None or p.fence_action_id is not None:
        return False
    # anything else failing (the node not Ready, a GPU already missing, a diagnostic) keeps it out
    incident = _fault_alone(session, p, [c for c in checks if not c.ok])
    if incident is None or incident.family == "fabric":
        return False
    if incident.gpu is not None and incident.gpu != p.gpu:
        return False
    return fault_of(incident)[1] == REPLACE or _returned_before(session, p, deps.policy.repeat_window_s) is not None


def _offered_again(session: Session, deps: ExecutionDeps, p: NodeProbation,
                   withheld: dict[int, NodeProbation]) -> int | None:
    """A GPU the node returned to service without (on an open ticket) that the device plugin offers again, to be
    fenced before the node returns. A reboot reloads the driver, which lifts every fence: after a reboot this
    probation's incident ran, a GPU fenced before it is offered again, whatever the count says (another GPU that
    stayed off the bus would hide it in the allocatable count). And a device plugin that restarts forgets its
    unhealthy marks: the node offering more GPUs than it has without the withheld ones says one is back. None when
    neither holds, or fences are off or tried already. `withheld`: the node's GPUs on open tickets besides the
    probation's own, each with the probation that left it behind."""
    if not withheld or not deps.policy.fence_gpus or p.fence_action_id is not None:
        return None
    incident = session.get(Incident, p.incident_id)
    reboots = [a.executed_at for a in (incident.actions if incident is not None else [])
               if a.runbook == "reboot_node" and a.status == ActionStatus.SUCCEEDED and a.executed_at is not None]
    fenced = [g for g, w in withheld.items() if w.fence_action_id is not None and w.finished_at is not None
              and any(at >= w.finished_at for at in reboots)]
    if fenced:
        return min(fenced)
    try:
        info = deps.cluster.get_node(p.hostname)
    except ClusterError:
        return None
    return min(withheld) if info.gpu_allocatable > info.gpu_capacity - len(withheld) else None


def _fence(uow: UnitOfWork, p: NodeProbation, deps: ExecutionDeps,
           again: NodeProbation | None = None) -> ProbationOutcome:
    """Propose the fence of the probation's GPU; or, with `again` (the probation that returned the node without a
    GPU now offered again), of that GPU, under the incident that left it behind (its scope is that GPU; this
    probation's incident's is not). When it has run, `conclude` puts the probation back to be examined (one GPU
    short, it returns without that GPU), or, failed, to be kept out."""
    session, now = uow.session, _now(deps)
    incident = session.get(Incident, p.incident_id)
    fault = fault_of(incident)[0] if incident else "a fault no remediation fixes"
    owner, gpu = p.incident_id, p.gpu
    if again is not None:
        fault = f"on a hardware ticket, and offered to pods again since {p.hostname} rebooted or its device plugin " \
                "restarted"
        owner, gpu = again.incident_id, again.gpu
    plan = Plan(runbook="fence_gpu", targets=(Target.parse(f"gpu/{p.hostname}/{gpu}"),), params={
        "reason": f"gpuops probation {p.id}: GPU {gpu} needs replacing ({fault}); the node returns without it"[:500]})
    outcome = propose(uow, proposal=Proposal(owner, plan, _summary(p)[:2000], PLANNER), deps=deps)
    p.fence_action_id = outcome.action_id
    p.status = store.FENCING
    store.record(session, p, kind="probation.fencing", now=now, data={"checks": p.checks},
                 message=f"{p.hostname} GPU {gpu} needs replacing ({fault}) and the device plugin still offers "
                         f"it; fence_gpu proposed as action {outcome.action_id}: {outcome.status}, then the node "
                         "returns with its other GPUs")
    return ProbationOutcome(p.id, p.status, "fence of the GPU proposed", outcome.action_id, outcome.status, True)


def _gpu_ticket(session: Session, p: NodeProbation) -> HardwareTicket | None:
    """An RMA request still open for the probation's GPU: for that GPU, or opened by its incident."""
    return session.scalars(select(HardwareTicket).where(
        HardwareTicket.hostname == p.hostname, HardwareTicket.status == "open",
        (HardwareTicket.gpu == p.gpu) | (HardwareTicket.incident_id == p.incident_id))
        .order_by(HardwareTicket.id.desc())).first()


def _ticket_then_return(uow: UnitOfWork, p: NodeProbation, deps: ExecutionDeps) -> ProbationOutcome:
    """The node returns without its withheld GPU (or its port), once that part's RMA request is recorded: propose
    the ticket; when it has run, the probation is examined again and proposes the uncordon (see `conclude`)."""
    session, now = uow.session, _now(deps)
    incident = session.get(Incident, p.incident_id)
    fault = fault_of(incident)[0] if incident else ""
    serves = "with its other GPUs" if store.withholds_gpu(p.checks) else "work that stays inside the node"
    plan = Plan(runbook="open_hardware_ticket", targets=(Target.parse(f"node/{p.hostname}"),), params={
        "gpu": p.gpu, "summary": f"{p.hostname} {_part(session, p)} withheld after incident {p.incident_id} "
                                 f"({incident.title if incident else ''}); the node serves {serves}"[:500],
        "fault": fault[:100], "evidence": {c["name"]: str(c["detail"])[:500] for c in p.checks}})
    reason = f"{_summary(p)}"
    outcome = propose(uow, proposal=Proposal(p.incident_id, plan, reason[:2000], PLANNER), deps=deps)
    p.ticket_action_id = outcome.action_id
    p.status = store.TICKETING
    gpu = store.withholds_gpu(p.checks)
    store.record(session, p, kind="probation.gpu_withheld" if gpu else "probation.port_withheld", now=now,
                 data={"checks": p.checks},
                 message=f"{p.hostname} passed its probation but for {_part(session, p)}"
                         f"{', ' + _held_back(p) if gpu else ''}; open_hardware_ticket proposed as action "
                         f"{outcome.action_id}: {outcome.status}, then the node returns {serves}")
    return ProbationOutcome(p.id, p.status, f"ticket for the withheld {'GPU' if gpu else 'port'} proposed",
                            outcome.action_id, outcome.status, True)


def _return(uow: UnitOfWork, p: NodeProbation, deps: ExecutionDeps) -> ProbationOutcome:
    """Every check passed: lift gpuops' cordon through an uncordon_node action, or, when the node is no longer
    gpuops' cordon, release gpuops' hold on it and leave it as it is."""
    session, now = uow.session, _now(deps)
    minutes = _minutes(p, now)
    node = deps.cluster.get_node(p.hostname)
    port = _port_of(session, p) if store.withholds_port(p.checks) else None
    lift = any(t.key == store.PORT_TAINT for t in node.taints) and port is None and not store.held_back(
        session, p.hostname).port_incidents()  # gpuops' taint for a port no ticket waits on any more: repaired
    if node.unschedulable and node.cordoned_by_gpuops:
        params: dict[str, Any] = {"reason": f"gpuops probation {p.id}: healthy for {minutes} min after the "
                                            f"remediation{_without(p)}"}
        if port is not None:
            params |= {"taint_key": store.PORT_TAINT, "taint_value": port}
        elif lift:
            params |= {"lift_taint_key": store.PORT_TAINT}
        return _propose_return(uow, p, deps, Plan(
            runbook="uncordon_node", targets=(Target.parse(f"node/{p.hostname}"),), params=params), "")
    if lift and not node.unschedulable:  # back in service under the taint, and its port repaired: lift it
        return _propose_return(uow, p, deps, Plan(
            runbook="untaint_node", targets=(Target.parse(f"node/{p.hostname}"),), params={
                "key": store.PORT_TAINT, "reason": f"gpuops probation {p.id}: healthy for {minutes} min after its "
                                                   "InfiniBand port's repair"}), "its port is repaired: ")
    release_node(session, node=p.hostname, now=now)
    why = ("it is already schedulable" if not node.unschedulable
           else "someone else cordoned it, and gpuops never uncordons a node it did not cordon")
    _finish(session, p, store.RETURNED if not node.unschedulable else store.RELEASED, now,
            f"{p.hostname} passed {minutes} min of probation; gpuops released its hold: {why}")
    _resolve(session, p, now, f"{p.hostname} passed {minutes} min of probation; {why}")
    return ProbationOutcome(p.id, p.status, p.reason)


def _propose_return(uow: UnitOfWork, p: NodeProbation, deps: ExecutionDeps, plan: Plan,
                    why: str) -> ProbationOutcome:
    """Propose the action that returns the node (its uncordon, or the lift of its port's taint) and wait for it."""
    outcome = propose(uow, proposal=Proposal(p.incident_id, plan, _summary(p), PLANNER), deps=deps)
    p.return_action_id = outcome.action_id
    p.status = store.RETURNING
    store.record(uow.session, p, kind="probation.passed", now=_now(deps), data={"checks": p.checks},
                 message=f"{p.hostname} passed {_minutes(p, _now(deps))} min of probation ({_summary(p)}); {why}"
                         f"{plan.runbook} proposed as action {outcome.action_id}: {outcome.status}")
    return ProbationOutcome(p.id, p.status, f"{plan.runbook} proposed", outcome.action_id, outcome.status, True)


def _keep_out(uow: UnitOfWork, p: NodeProbation, failed: list[Check], deps: ExecutionDeps,
              withheld: Sequence[int]) -> ProbationOutcome:
    """A check failed: the node stays out and an RMA request is recorded, unless one is open for the node
    already (for a node back in service without a withheld GPU, one for this probation's GPU or incident: the
    withheld GPU's ticket says nothing of this one). The incident goes to a human, unless its own plan already
    opened that request (the hardware was expected to fail: the ticket is the human's hand-over)."""
    session, now = uow.session, _now(deps)
    reason = f"{p.hostname} stays out of service: probation failed: " + "; ".join(
        f"{c.name}: {c.detail}" for c in failed)
    p.reason = reason[:2000]
    existing = _gpu_ticket(session, p) if withheld else store.open_ticket(session, p.hostname)
    if existing is None or existing.incident_id != p.incident_id:
        _escalate(session, p, now, reason[:500])
    if existing is not None:
        _finish(session, p, store.KEPT_OUT, now, f"{reason}; hardware ticket {existing.id} is already open")
        return ProbationOutcome(p.id, p.status, p.reason)
    incident = session.get(Incident, p.incident_id)
    plan = Plan(runbook="open_hardware_ticket", targets=(Target.parse(f"node/{p.hostname}"),), params={
        "gpu": p.gpu, "summary": f"{p.hostname}{'' if p.gpu is None else f' GPU {p.gpu}'} failed probation after "
                                 f"incident {p.incident_id} ({incident.title if incident else ''})"[:500],
        "fault": (fault_of(incident)[0] if incident else "")[:100],
        "evidence": {c.name: c.detail[:500] for c in failed}})
    outcome = propose(uow, proposal=Proposal(p.incident_id, plan, reason[:2000], PLANNER), deps=deps)
    p.ticket_action_id = outcome.action_id
    p.status = store.TICKETING
    store.record(session, p, kind="probation.failed", now=now, data={"checks": p.checks},
                 message=f"{reason}; open_hardware_ticket proposed as action {outcome.action_id}: {outcome.status}")
    return ProbationOutcome(p.id, p.status, reason, outcome.action_id, outcome.status, True)


def conclude(uow: UnitOfWork, *, probation_id: int, now: datetime) -> ProbationOutcome:
    """After the probation's own action ran (or was refused): record how the node's return, or its ticket,
    ended, and resolve or escalate the incident accordingly. Runs in the caller's transaction."""
    session = uow.session
    p = session.get(NodeProbation, probation_id)
    if p is None:
        raise NotFound(f"probation {probation_id} does not exist")
    if p.status not in (store.FENCING, store.RETURNING, store.TICKETING):
        return _standing(session, p)
    action = session.get(Action, _action_of(p))
    status = action.status if action is not None else "gone"
    if status not in ActionStatus.FINISHED and action is not None:
        return _standing(session, p)
    detail = "" if action is None else (action.error or "; ".join(action.verdict.get("reasons", [])))
    if p.status == store.FENCING:  # examined again either way: one GPU short it returns, else it stays out; its
        p.status = store.PROBATION  # probation was over already (or had nothing to wait for), so not again
        done = status == ActionStatus.SUCCEEDED
        store.record(session, p, kind="probation.fenced" if done else "probation.fence_failed", now=now,
                     message=f"{p.hostname} GPU {_target_gpu(action, p)} " + (
                         f"fenced off (action {p.fence_action_id}); the node returns with its other GPUs" if done
                         else f"not fenced: fence_gpu (action {p.fence_action_id}) {status}"
                              f"{': ' + detail if detail else ''}; the node stays out for the repair"))
    elif p.status == store.TICKETING and store.returns_short(p.checks):
        if status == ActionStatus.SUCCEEDED:
            p.status, p.due_at = store.PROBATION, min(p.due_at, now)  # examined again: the ticket is open
            store.record(session, p, kind="probation.ticketed", now=now,
                         message=f"hardware ticket for {p.hostname} {_part(session, p)} opened (action "
                                 f"{p.ticket_action_id}); the node returns without it")
        else:  # no RMA request for the withheld part: the node is not returned without one
            why = (f"{p.hostname} stays out of service: {_part(session, p)} is withheld and its hardware ticket "
                   f"(action {p.ticket_action_id}) {status}{': ' + detail if detail else ''}")
            _finish(session, p, store.KEPT_OUT, now, why)
            _escalate(session, p, now, why[:500])
    elif p.status == store.TICKETING:
        _finish(session, p, store.KEPT_OUT, now, f"{p.reason}; hardware ticket action {p.ticket_action_id} "
                                                 f"{status}{': ' + detail if detail and status != 'succeeded' else ''}")
    elif status == ActionStatus.DENIED:  # not now (rate limit, freeze window): asked again a little later
        p.status, p.return_action_id = store.PROBATION, None
        p.due_at = max(p.due_at, now + timedelta(seconds=RETRY_AFTER_S))
        store.record(session, p, kind="probation.return_denied", now=now,
                     message=f"uncordon of {p.hostname} denied by policy ({detail}); asked again after "
                             f"data time {p.due_at.isoformat()}")
    elif status == ActionStatus.SUCCEEDED:
        minutes = _minutes(p, now)
        _finish(session, p, store.RETURNED, now, f"returned to service after {minutes} min of probation"
                                                 f"{_without(p)}")
        _resolve(session, p, now, f"{p.hostname} returned to service after {minutes} min of probation{_without(p)}")
    else:
        why = f"{p.hostname} stays out of service: uncordon_node (action {p.return_action_id}) {status}: {detail}"
        _finish(session, p, store.KEPT_OUT, now, why)
        _escalate(session, p, now, why[:500])
    return _standing(session, p)


# -- small helpers ----------------------------------------------------------------------------------------------


def _without(p: NodeProbation) -> str:
    """How a node returns that leaves its withheld GPU (or port) behind, in words (empty for a whole node)."""
    if store.withholds_port(p.checks):
        return (f", under the taint {store.PORT_TAINT} for work that stays inside the node (its InfiniBand port "
                "on a hardware ticket)")
    if not store.withholds_gpu(p.checks):
        return ""
    return f", without GPU {p.gpu} ({_held_back(p)}, on a hardware ticket)"


def _port_of(session: Session, p: NodeProbation) -> str | None:
    incident = session.get(Incident, p.incident_id)
    return store.incident_port(incident) if incident is not None else None


def _part(session: Session, p: NodeProbation) -> str:
    """The part a probation returns its node without, in words: `GPU 3`, or `InfiniBand mlx5_3`."""
    port = _port_of(session, p) if store.withholds_port(p.checks) else None
    return f"InfiniBand {port}" if port is not None else f"GPU {p.gpu}"


def _held_back(p: NodeProbation) -> str:
    """What keeps the probation's GPU from pods: gpuops' fence, or the device plugin's unhealthy mark."""
    return "fenced off by gpuops" if p.fence_action_id is not None else "withheld by the device plugin"


def _target_gpu(action: Action | None, p: NodeProbation) -> int | None:
    """The GPU a fence action targets (the probation's own, or one the node had returned without)."""
    targets = [Target.parse(t) for t in (action.targets if action is not None else [])]
    return next((t.gpu for t in targets if t.gpu is not None), p.gpu)


def _action_of(p: NodeProbation) -> int | None:
    """The action a probation past its examination waits for: its fence, its uncordon or its ticket."""
    return {store.FENCING: p.fence_action_id, store.RETURNING: p.return_action_id,
            store.TICKETING: p.ticket_action_id}.get(p.status)


def _standing(session: Session, p: NodeProbation) -> ProbationOutcome:
    action_id = _action_of(p)
    action = session.get(Action, action_id) if action_id is not None else None
    return ProbationOutcome(p.id, p.status, p.reason, action_id, action.status if action is not None else None)


def _finish(session: Session, p: NodeProbation, status: str, now: datetime, reason: str) -> None:
    p.status, p.finished_at, p.reason = status, now, reason[:2000]
    store.record(session, p, kind=f"probation.{status}", now=now, message=reason, data={"checks": p.checks})


def _resolve(session: Session, p: NodeProbation, now: datetime, reason: str) -> None:
    """The incident is resolved with the reason (or, already resolved, notes it on its timeline)."""
    incident = session.get(Incident, p.incident_id)
    if incident is not None and can_transition(incident.status, IncidentStatus.RESOLVED):
        transition(session, incident, IncidentStatus.RESOLVED, reason=reason, actor=PLANNER, now=now)


def _escalate(session: Session, p: NodeProbation, now: datetime, reason: str) -> None:
    """The incident goes to a human with the reason; one the agent had resolved is reopened for it."""
    incident = session.get(Incident, p.incident_id)
    if incident is None:
        return
    if incident.status == IncidentStatus.RESOLVED:
        transition(session, incident, IncidentStatus.OPEN, reason=f"reopened: {reason}", actor=PLANNER, now=now)
    if can_transition(incident.status, IncidentStatus.ESCALATED):
        transition(session, incident, IncidentStatus.ESCALATED, reason=reason, actor=PLANNER, now=now)


def _summary(p: NodeProbation) -> str:
    return "; ".join(f"{c['name']}: {c['detail']}" for c in p.checks)[:2000] or "no checks"


def _minutes(p: NodeProbation, now: datetime) -> int:
    return max(0, round((now - p.started_at).total_seconds() / 60))


def _now(deps: ExecutionDeps) -> datetime:
    return datetime.fromtimestamp(deps.clock(), tz=UTC)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)
