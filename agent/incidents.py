"""The agent's vocabulary for incidents: the snapshot triage reads (its JSON form lives in the checkpointed
state), the part of it that bounds an action's targets, and the history of a node. The store behind them is
the core's, reached through `agent.ports.IncidentPort` and `EvidencePort`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class IncidentSnapshot:
    """An incident as plain data: its facts, the findings' evidence merged oldest first, the XID code the
    evidence carries, and when it opened (`opened_ts`: the data time of its first finding). `fault_gpu`: the one
    GPU the incident's facts name when its scope is wider (a node-wide NVLink incident opened by an XID on GPU
    2, whose peers' link counters rose too), else None."""

    id: int
    scope: str                     # gpu | node | fleet | workload
    family: str
    hostname: str | None
    gpu: int | None
    severity: str
    status: str
    title: str
    details: dict[str, Any]
    evidence: dict[str, Any]
    xid: int | None
    opened_at: str                 # ISO time
    opened_ts: float
    closed: bool                   # nothing left to do (resolved or suppressed)
    fault_gpu: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What triage puts in the state for the other nodes (everything but `closed`)."""
        return {"id": self.id, "scope": self.scope, "family": self.family, "hostname": self.hostname,
                "gpu": self.gpu, "severity": self.severity, "status": self.status, "title": self.title,
                "details": dict(self.details), "evidence": dict(self.evidence), "xid": self.xid,
                "opened_at": self.opened_at, "opened_ts": self.opened_ts, "fault_gpu": self.fault_gpu}


@dataclass(frozen=True)
class IncidentScope:
    """What bounds an action's targets: the incident's scope, node, GPU and details (a named deployment)."""

    id: int
    scope: str
    hostname: str | None = None
    gpu: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: Mapping[str, Any]) -> IncidentScope:
        """The scope of a snapshot as the state stores it."""
        return cls(id=int(snapshot["id"]), scope=str(snapshot["scope"]), hostname=snapshot.get("hostname"),
                   gpu=snapshot.get("gpu"), details=dict(snapshot.get("details") or {}))


@dataclass(frozen=True)
class PastAction:
    """An action taken on an earlier incident."""

    runbook: str
    status: str


@dataclass(frozen=True)
class PastIncident:
    """An earlier incident on the same node, with the actions taken on it."""

    id: int
    family: str
    gpu: int | None
    status: str
    opened_at: datetime
    actions: tuple[PastAction, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "family": self.family, "gpu": self.gpu, "status": self.status,
                "opened_at": self.opened_at.isoformat(),
                "actions": [{"runbook": a.runbook, "status": a.status} for a in self.actions]}
