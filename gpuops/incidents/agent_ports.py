"""The agent's ports over the incident store: snapshots, lifecycle moves, timeline and audit entries, LLM
usage, and a node's history. Each call is one unit of work, committed before it returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.errors import IncidentNotFound
from agent.incidents import IncidentSnapshot, PastAction, PastIncident
from domain.kinds import is_hard
from gpuops.incidents.lifecycle import CLOSED, add_timeline, can_transition, transition
from gpuops.store.audit import append_event
from gpuops.store.models import Incident
from gpuops.store.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)

USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")


def _load(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist")
    return incident


def snapshot_of(incident: Incident) -> IncidentSnapshot:
    """The incident as plain data, with its findings' evidence merged oldest first."""
    evidence: dict[str, Any] = {}
    data_times = []
    for finding in sorted(incident.findings, key=lambda f: f.ts):
        evidence.update(finding.evidence or {})
        data_times.append(finding.ts.timestamp())
    xid = evidence.get("xid")
    fact_gpus = {f.gpu for f in incident.findings
                 if f.gpu is not None and f.kind == incident.family and is_hard(f.kind, f.severity, f.evidence)}
    return IncidentSnapshot(
        id=incident.id, scope=incident.scope, family=incident.family, hostname=incident.hostname, gpu=incident.gpu,
        severity=incident.severity, status=incident.status, title=incident.title,
        details=dict(incident.details or {}), evidence=evidence,
        xid=int(xid) if isinstance(xid, int | float | str) and str(xid).isdigit() else None,
        opened_at=incident.opened_at.isoformat(),
        opened_ts=min(data_times) if data_times else incident.opened_at.timestamp(),
        closed=incident.status in CLOSED,
        fault_gpu=incident.gpu if incident.gpu is not None else (fact_gpus.pop() if len(fact_gpus) == 1 else None),
    )


class StoreIncidents:
    """IncidentPort over the store and the incident lifecycle."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow

    def snapshot(self, incident_id: int) -> IncidentSnapshot:
        with self.uow() as uow:
            return snapshot_of(_load(uow.session, incident_id))

    def move(self, incident_id: int, status: str, *, reason: str, actor: str, now: datetime) -> bool:
        with self.uow() as uow:
            incident = _load(uow.session, incident_id)
            if incident.status == status:
                return False
            if not can_transition(incident.status, status):
                log.info("incident %s stays %s (no move to %s)", incident.id, incident.status, status)
                return False
            transition(uow.session, incident, status, reason=reason, actor=actor, now=now)
            uow.commit()
        return True

    def record(self, incident_id: int, *, kind: str, message: str, data: Mapping[str, Any], actor: str,
               now: datetime, action_id: int | None = None) -> None:
        with self.uow() as uow:
            incident = _load(uow.session, incident_id)
            add_timeline(uow.session, incident, kind=kind, message=message[:2000], now=now, data=dict(data))
            append_event(uow.session, actor=actor, kind=kind, incident_id=incident.id, action_id=action_id,
                         data={"message": message[:2000], **data}, ts=now)
            uow.commit()

    def llm_calls(self, incident_id: int) -> int:
        with self.uow() as uow:
            details = _load(uow.session, incident_id).details or {}
            return int(details.get("llm_usage", {}).get("calls", 0))

    def add_llm_usage(self, incident_id: int, usage: Mapping[str, float]) -> dict[str, float]:
        with self.uow() as uow:
            incident = _load(uow.session, incident_id)
            details = dict(incident.details or {})
            total = dict(details.get("llm_usage") or {})
            for key in USAGE_KEYS:
                total[key] = round(total.get(key, 0) + usage.get(key, 0), 6)
            details["llm_usage"] = total
            incident.details = details  # reassigned, so the JSON column is saved
            uow.commit()
        return total


class StoreEvidence:
    """EvidencePort over the store: a node's earlier incidents and the actions taken on them."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow

    def incidents_on_node(self, hostname: str, *, since: datetime, excluding: int,
                          limit: int = 20) -> list[PastIncident]:
        stmt = (select(Incident).where(Incident.hostname == hostname, Incident.id != excluding,
                                       Incident.opened_at >= since).order_by(Incident.id.desc()).limit(limit))
        with self.uow() as uow:
            return [PastIncident(id=other.id, family=other.family, gpu=other.gpu, status=other.status,
                                 opened_at=other.opened_at,
                                 actions=tuple(PastAction(a.runbook, a.status) for a in other.actions))
                    for other in uow.session.scalars(stmt)]
