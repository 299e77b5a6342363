"""A node's probation, as the store keeps it. After a verified disruptive action on a node (cordon, drain, reset,
reboot) the node waits out of service, on gpuops' lease, until `probation_s` of telemetry after the remediation
has been examined (data time, as the soak counts it: detection that lags does not shorten it). Each further
verified action on the node restarts the wait. `gpuops.execution.returns` decides when it is over.

This module only reads and writes rows (the executor calls it while it records an action's end); it never
proposes or executes anything."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import ActionStatus, Target, TargetKind
from gpuops.incidents.lifecycle import add_timeline
from gpuops.policy import PolicyConfig
from gpuops.store.audit import append_event
from gpuops.store.models import Action, HardwareTicket, Incident, NodeProbation
from runbooks.taint import PORT_TAINT as PORT_TAINT  # the store names it for its readers

PROBATION, FENCING, RETURNING, TICKETING = "probation", "fencing", "returning", "ticketing"
RETURNED, RELEASED, KEPT_OUT, REPAIRED = "returned", "released", "kept_out", "repaired"
ACTIVE = (PROBATION, FENCING, RETURNING, TICKETING)
FINISHED = (RETURNED, RELEASED, KEPT_OUT, REPAIRED)
REPAIR_REASON = "hardware repaired"  # a probation's reason after a repair: the replaced part fixed the fault
WITHHELD = "gpu_withheld"  # the check that let a node return without the one GPU the device plugin withholds
# What a withheld GPU explains: the node reports one GPU short, and the GPU's own fault is not fixed (it is fenced
# off instead, until it is replaced).
WITHHELD_EXCUSES = frozenset({"gpus_present", "fault_fixed", WITHHELD})
PORT_WITHHELD = "port_withheld"  # the check that let a node return, tainted, while one InfiniBand port waits
# What a port waiting for its repair explains: the fault's own fix (a new cable, transceiver or HCA) is not done.
PORT_EXCUSES = frozenset({"fault_fixed", PORT_WITHHELD})


def withholds_gpu(checks: list[dict[str, Any]] | None) -> bool:
    """Whether a probation's checks return its node without a GPU the device plugin withholds: that check
    passed, and every check that failed is one the withheld GPU explains."""
    rows = checks or []
    return any(c.get("name") == WITHHELD and c.get("ok") for c in rows) and all(
        c.get("ok") or c.get("name") in WITHHELD_EXCUSES for c in rows)


def withholds_port(checks: list[dict[str, Any]] | None) -> bool:
    """Whether a probation's checks return its node under `PORT_TAINT` while one InfiniBand port waits for its
    repair: that check passed, and every check that failed is one the port explains."""
    rows = checks or []
    return any(c.get("name") == PORT_WITHHELD and c.get("ok") for c in rows) and all(
        c.get("ok") or c.get("name") in PORT_EXCUSES for c in rows)


def returns_short(checks: list[dict[str, Any]] | None) -> bool:
    """Whether a probation returns its node short of a part (a GPU, or an InfiniBand port) on a hardware ticket."""
    return withholds_gpu(checks) or withholds_port(checks)


def incident_port(incident: Incident) -> str | None:
    """The one HCA (`mlx5_3`) a node's fabric incident is about, from its findings; None when the incident is not
    one port's (a fleet event, several ports, another family)."""
    if incident.family != "fabric" or incident.scope == "fleet":
        return None
    devices = {str(f.evidence.get("device")) for f in incident.findings
               if f.kind == "fabric" and (f.evidence or {}).get("device")}
    return next(iter(devices)) if len(devices) == 1 else None


def active_probation(session: Session, node: str) -> NodeProbation | None:
    """The node's probation still under way, if any."""
    return session.scalars(select(NodeProbation).where(
        NodeProbation.hostname == node, NodeProbation.status.in_(ACTIVE)).order_by(NodeProbation.id.desc())).first()


def kept_out(session: Session, node: str) -> NodeProbation | None:
    """The probation that kept the node out for hardware work, if any: gpuops leaves that node to the humans."""
    return session.scalars(select(NodeProbation).where(
        NodeProbation.hostname == node, NodeProbation.status == KEPT_OUT).order_by(NodeProbation.id.desc())).first()


def begin_probation(session: Session, *, action: Action, targets: tuple[Target, ...], config: PolicyConfig,
                    now: datetime) -> list[NodeProbation]:
    """Start (or restart) the probation of each node a verified disruptive `action` acted on. A node already
    returning or ticketing is left as it is, and so is a node a failed probation kept out."""
    started = []
    for target in targets:
        if target.kind not in (TargetKind.NODE, TargetKind.GPU) or not target.node:
            continue
        if kept_out(session, target.node) is not None:
            continue
        probation = active_probation(session, target.node)
        if probation is not None and probation.status != PROBATION:
            continue
        verb = "restarts" if probation is not None else "starts"
        if probation is None:
            probation = NodeProbation(hostname=target.node, incident_id=action.incident_id, status=PROBATION,
                                      checks=[], reason="")
            session.add(probation)
        probation.incident_id = action.incident_id
        probation.action_id = action.id
        probation.gpu = target.gpu if target.gpu is not None else action.incident.gpu
        probation.started_at = now
        probation.due_at = now + timedelta(seconds=config.probation_s)
        session.flush()
        record(session, probation, kind="probation.started", now=now,
                message=f"{target.node}'s probation {verb} after {action.runbook} (action {action.id}): it returns "
                        f"to service once {config.probation_s / 60:.0f} min of telemetry show its GPUs healthy")
        started.append(probation)
    return started


def record_isolated(session: Session, *, action: Action, now: datetime) -> list[NodeProbation]:
    """Keep what a verified `isolate_gpu` left behind: its node never left service, and serves without the GPU it
    fenced off. Recorded as a probation that returned the node without that GPU (what a node's probation records
    when it returns a node one GPU short), so the GPU's later reports are filed with its incident, the node's next
    probation knows the GPU is withheld, a reboot that lifts the fence has it fenced again, and the humans' repair
    returns it; it holds back the GPU once its hardware ticket is open."""
    rows = []
    for target in action.targets:
        t = Target.parse(str(target))
        if t.kind is not TargetKind.GPU or not t.node or t.gpu is None:
            continue
        row = NodeProbation(hostname=t.node, gpu=t.gpu, incident_id=action.incident_id, action_id=action.id,
                            status=RETURNED, started_at=now, due_at=now, finished_at=now, fence_action_id=action.id,
                            checks=[{"name": WITHHELD, "ok": True, "detail": f"GPU {t.gpu} fenced off by "
                                     f"{action.runbook} (action {action.id}); {t.node} serves with its other GPUs"}],
                            reason=f"GPU {t.gpu} isolated in service")
        session.add(row)
        session.flush()
        record(session, row, kind="probation.isolated", now=now,
               message=f"{t.node} serves on without GPU {t.gpu}, fenced off by {action.runbook} (action "
                       f"{action.id}); the GPU waits for its hardware ticket")
        rows.append(row)
    return rows


def record_ticket(session: Session, *, action: Action, result_data: dict[str, Any], now: datetime) -> HardwareTicket:
    """Keep the RMA request an `open_hardware_ticket` action recorded (its step returns it for us to persist)."""
    ticket = dict(result_data.get("ticket") or {})
    webhook = result_data.get("webhook") or {}
    row = HardwareTicket(incident_id=action.incident_id, action_id=action.id, hostname=str(ticket.get("node") or ""),
                         gpu=ticket.get("gpu"), uuid=None, summary=str(ticket.get("summary") or ""),
                         evidence={"id": ticket.get("id"), "fault": ticket.get("fault"),
                                   "evidence": ticket.get("evidence") or {}},
                         status="open", webhook_status=str(webhook.get("status")) if webhook else None,
                         created_at=now)
    session.add(row)
    return row


class HeldBack(NamedTuple):
    """What a node returned to service without while its RMA requests are open, each part with the probation
    that left it behind: GPUs the device plugin withholds (or gpuops fenced off), and InfiniBand ports (HCA names)
    under `PORT_TAINT`; and the ports its node served on without from the start, under the taint their incident's
    plan put on (`taint_port`), each with that incident's id."""

    gpus: dict[int, NodeProbation]
    ports: dict[str, NodeProbation]
    tainted: dict[str, int]

    def port_incidents(self) -> dict[str, int]:
        """Every port the node serves without while its ticket is open, with the incident it belongs to."""
        return {**self.tainted, **{port: p.incident_id for port, p in self.ports.items()}}


def held_back(session: Session, node: str) -> HeldBack:
    """The node's parts on open tickets that it serves without (see `HeldBack`). Empty for most nodes: one query
    when the node has no open ticket."""
    tickets = list(session.scalars(select(HardwareTicket).where(
        HardwareTicket.hostname == node, HardwareTicket.status == "open")))
    held = HeldBack({}, {}, {})
    if not tickets:
        return held
    # the port each ticket's incident is about, where it is one port's (read once for both kinds below)
    ports = {i: port for i in {t.incident_id for t in tickets if t.incident_id is not None}
             if (incident := session.get(Incident, i)) is not None and (port := incident_port(incident)) is not None}
    if ports:
        for incident_id in session.scalars(select(Action.incident_id).where(
                Action.incident_id.in_(ports), Action.runbook == "taint_port",
                Action.status == ActionStatus.SUCCEEDED).distinct().order_by(Action.incident_id)):
            held.tainted[ports[incident_id]] = incident_id
    for p in session.scalars(select(NodeProbation).where(
            NodeProbation.hostname == node, NodeProbation.status == RETURNED).order_by(NodeProbation.id)):
        if p.gpu is not None and withholds_gpu(p.checks) and any(
                t.gpu == p.gpu or t.incident_id == p.incident_id for t in tickets):
            held.gpus[p.gpu] = p
        elif withholds_port(p.checks) and p.incident_id in ports:
            held.ports[ports[p.incident_id]] = p
    return held


def withheld_gpus(session: Session, node: str) -> dict[int, NodeProbation]:
    """The node's GPUs it returned to service without (the device plugin withholds them) while their RMA requests
    are open, each with the probation that left it behind: the node waits for their repair, in service with its
    other GPUs."""
    return held_back(session, node).gpus


def degraded_ports(session: Session, node: str) -> dict[str, NodeProbation]:
    """The node's InfiniBand ports (HCA names) it returned to service without, under `PORT_TAINT`, while their
    hardware tickets are open, each with the probation that returned it."""
    return held_back(session, node).ports


def returned_without_gpu(session: Session, node: str) -> NodeProbation | None:
    """The latest probation that returned the node to service without a GPU it still withholds, if any."""
    withheld = withheld_gpus(session, node)
    return max(withheld.values(), key=lambda p: p.id) if withheld else None


def returned_degraded(session: Session, node: str) -> NodeProbation | None:
    """The latest probation that returned the node under `PORT_TAINT`, its port still on a ticket, if any."""
    ports = degraded_ports(session, node)
    return max(ports.values(), key=lambda p: p.id) if ports else None


def open_ticket(session: Session, node: str) -> HardwareTicket | None:
    """An RMA request still open for the node, if any (a second one would say nothing new)."""
    return session.scalars(select(HardwareTicket).where(
        HardwareTicket.hostname == node, HardwareTicket.status == "open").order_by(HardwareTicket.id.desc())).first()


class NotKeptOut(ValueError):
    """The node is not waiting for repair: nothing to return."""


def mark_repaired(session: Session, *, node: str, by: str, note: str, config: PolicyConfig,
                  now: datetime) -> NodeProbation:
    """The humans repaired a node gpuops kept out, or returned without a withheld GPU or with a port on a ticket,
    or left in service with its ticket open (the ticket's part was replaced): close its open hardware tickets and
    start a fresh probation, so the node returns to service, or gets its part back, only through the same checks
    as after any remediation (Ready, every GPU allocatable, no new errors for `probation_s`, the node agent's
    diagnostic where one is wired). Raises `NotKeptOut` when the node is not waiting for repair."""
    kept = kept_out(session, node) or returned_without_gpu(session, node) or returned_degraded(session, node)
    tickets = list(session.scalars(select(HardwareTicket).where(HardwareTicket.hostname == node,
                                                                HardwareTicket.status == "open")
                                   .order_by(HardwareTicket.id)))
    served_on = next((t for t in reversed(tickets) if t.incident_id is not None), None)
    if kept is not None:
        gpu, incident_id, action_id = kept.gpu, kept.incident_id, kept.action_id
        then = f"it returns to service once {config.probation_s / 60:.0f} min of telemetry show its GPUs healthy"
    elif served_on is not None and served_on.incident_id is not None:
        # A ticket the plan opened while the node served on (a port no job crosses): the probation watches the
        # repaired part all the same, on that ticket's incident.
        gpu, incident_id, action_id = served_on.gpu, served_on.incident_id, served_on.action_id
        then = (f"it stayed in service; {config.probation_s / 60:.0f} min of telemetry without new errors "
                "confirm the repair")
    else:
        raise NotKeptOut(f"{node} is not kept out for repair by gpuops and has no open hardware ticket; nothing to "
                         "return (see `gpuops tickets list`)")
    closed = []
    for ticket in tickets:
        ticket.status = "repaired"
        ticket.evidence = {**ticket.evidence, "repaired_by": by, "repaired_at": now.isoformat(), "note": note}
        closed.append(ticket.id)
    if kept is not None:
        kept.status, kept.finished_at = REPAIRED, now
    probation = NodeProbation(hostname=node, gpu=gpu, incident_id=incident_id, action_id=action_id,
                              status=PROBATION, started_at=now, due_at=now + timedelta(seconds=config.probation_s),
                              checks=[], reason=f"{REPAIR_REASON} by {by}" + (f": {note}" if note else ""))
    session.add(probation)
    session.flush()
    done = f"ticket(s) {', '.join(map(str, closed))} closed; " if closed else ""
    record(session, probation, kind="probation.repaired", now=now, data={"by": by, "tickets": closed},
           message=f"{node} repaired ({by}{': ' + note if note else ''}); {done}{then}")
    return probation


def probation_of_action(session: Session, action_id: int) -> int | None:
    """The probation whose fence, uncordon or ticket `action_id` is, if it is one."""
    return session.scalar(select(NodeProbation.id).where(
        (NodeProbation.return_action_id == action_id) | (NodeProbation.ticket_action_id == action_id)
        | (NodeProbation.fence_action_id == action_id)))


def record(session: Session, probation: NodeProbation, *, kind: str, message: str, now: datetime,
           data: dict[str, Any] | None = None) -> None:
    """A line on the probation's incident's timeline, and its audit record."""
    payload = {"probation_id": probation.id, "node": probation.hostname, **(data or {})}
    incident = session.get(Incident, probation.incident_id)
    if incident is not None:
        add_timeline(session, incident, kind=kind, message=message, now=now, data=payload)
    append_event(session, actor="probation", kind=kind, incident_id=probation.incident_id,
                 action_id=probation.action_id, data={"message": message, **payload}, ts=now)
