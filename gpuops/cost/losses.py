"""GPU-hours lost to incidents, from the store: GPUs out of service × time.

- A node gpuops took out (its node leases: cordoned, draining, rebooting) counts all its GPUs from the lease's start
  to its release (or now); overlapping leases of one incident on one node count once, for the runbook that took it
  out first.
- A hard fault (a GPU lost, a double-bit ECC error, a row-remap failure, a node NotReady) that no lease covered
  counts its GPU (or the node's GPUs) from the incident's opening to its resolution (or now), for the first runbook
  executed on it, or `none`.
- Other incidents (heat, stragglers, overload…) slow GPUs without taking them out: they count nothing here.

Saved GPU-hours are not estimated live: the evaluation's figure compares against an untouched run of the same fault
(its natural failure time and when a threshold alert plus a human would have acted), which a live fleet never has."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import ActionStatus
from domain.kinds import HARD_KINDS
from gpuops.store.models import Action, Incident, NodeLease

NO_RUNBOOK = "none"
SAVED_NOTE = ("not estimated live: saving needs the fault's natural course and a threshold alert's timing, which only "
              "the evaluation's untouched run of a scenario has (see `gpuops eval`)")


@dataclass
class IncidentLoss:
    incident_id: int
    title: str
    hostname: str | None
    runbook: str
    gpu_hours: float = 0.0
    by_week: dict[str, float] = field(default_factory=dict)


def week_of(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def split_by_week(start: datetime, end: datetime, gpus: int, into: dict[str, float]) -> float:
    """Add `gpus` × [start, end) to `into` per ISO week; the GPU-hours added."""
    total, at = 0.0, start
    while at < end:
        monday = (at - timedelta(days=at.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        stop = min(end, monday + timedelta(days=7))
        hours = gpus * (stop - at).total_seconds() / 3600.0
        into[week_of(at)] = into.get(week_of(at), 0.0) + hours
        total += hours
        at = stop
    return total


def merged_intervals(intervals: list[tuple[datetime, datetime, str]]) -> list[tuple[datetime, datetime, str]]:
    """Union of intervals, each labelled with the runbook of the first interval in it."""
    out: list[tuple[datetime, datetime, str]] = []
    for start, end, runbook in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end), out[-1][2])
        else:
            out.append((start, end, runbook))
    return out


def incident_losses(session: Session, *, now: datetime, gpus_per_node: Mapping[str, int],
                    default_gpus_per_node: int) -> list[IncidentLoss]:
    """Every incident that cost GPU-hours, the costliest first."""
    leases: dict[tuple[int, str], list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for lease, incident_id, runbook in session.execute(
            select(NodeLease, Action.incident_id, Action.runbook).join(Action, Action.id == NodeLease.action_id)):
        end = lease.released_at or now
        if end > lease.acquired_at:
            leases[(incident_id, lease.hostname)].append((lease.acquired_at, end, runbook))
    leased = {incident_id for incident_id, _ in leases}
    hard = session.scalars(select(Incident).where(Incident.family.in_(sorted(HARD_KINDS)),
                                                  Incident.scope != "fleet")).all()
    ids = leased | {i.id for i in hard}
    incidents = {i.id: i for i in session.scalars(select(Incident).where(Incident.id.in_(sorted(ids))))}
    out: dict[int, IncidentLoss] = {}

    def node_gpus(host: str | None) -> int:
        return gpus_per_node.get(host or "", default_gpus_per_node)

    for (incident_id, host), intervals in sorted(leases.items()):
        incident = incidents[incident_id]
        for start, end, runbook in merged_intervals(intervals):
            loss = out.setdefault(incident_id, IncidentLoss(incident_id, incident.title, incident.hostname, runbook))
            loss.gpu_hours += split_by_week(start, end, node_gpus(host), loss.by_week)
    for incident in hard:
        if incident.id in leased:
            continue
        end = incident.resolved_at or now
        if end <= incident.opened_at:
            continue
        gpus = 1 if incident.scope == "gpu" else node_gpus(incident.hostname)
        loss = IncidentLoss(incident.id, incident.title, incident.hostname, _first_runbook(session, incident.id))
        loss.gpu_hours = split_by_week(incident.opened_at, end, gpus, loss.by_week)
        out[incident.id] = loss
    return sorted(out.values(), key=lambda x: (-x.gpu_hours, x.incident_id))


def _first_runbook(session: Session, incident_id: int) -> str:
    runbook = session.scalar(select(Action.runbook).where(
        Action.incident_id == incident_id, Action.status.in_(sorted(ActionStatus.EXECUTED)))
        .order_by(Action.executed_at, Action.id).limit(1))
    return runbook or NO_RUNBOOK


def totals(losses: list[IncidentLoss]) -> tuple[dict[str, float], dict[str, float]]:
    """GPU-hours lost per runbook and per ISO week."""
    by_runbook: dict[str, float] = defaultdict(float)
    by_week: dict[str, float] = defaultdict(float)
    for loss in losses:
        by_runbook[loss.runbook] += loss.gpu_hours
        for week, hours in loss.by_week.items():
            by_week[week] += hours
    return dict(by_runbook), dict(sorted(by_week.items()))
