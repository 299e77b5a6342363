"""Incidents from real findings, and the graph with a checkpointer on the test's database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from agent.checkpoint import open_checkpointer
from agent.graph import compile_graph
from agent.runner import Graph
from detectors.findings import Finding, FindingKind
from gpuops.detection import shard_name
from gpuops.execution.approvals import Approver, DecisionOutcome, decide
from gpuops.incidents.service import ingest_findings
from gpuops.store.models import Action, DetectorState
from gpuops.wiring import Container

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()


def open_incident(container: Container, kind: FindingKind, *, node: str = "gpu-node-003", gpu: int | None = 2,
                  evidence: dict[str, Any] | None = None, details: dict[str, Any] | None = None) -> int:
    finding = Finding(ts=T0, hostname=node, gpu=gpu, uuid=None if gpu is None else f"GPU-{node}-{gpu}", kind=kind,
                      severity="critical", score=1.0, detector="test", evidence=evidence or {})
    with container.uow() as uow:
        result = ingest_findings(uow.session, [finding], fleet_nodes=8, now=datetime.fromtimestamp(T0, tz=UTC))
        incident_id = result.touched[0]
        if details:
            from gpuops.store.models import Incident

            incident = uow.session.get(Incident, incident_id)
            assert incident is not None
            incident.details = {**incident.details, **details}
        uow.commit()
    return incident_id


@contextmanager
def graph_on(container: Container) -> Iterator[Graph]:
    with open_checkpointer(container.settings.database_url) as saver:
        yield compile_graph(saver)


def approve(container: Container, action_id: int, who: str = "alice", decision: str = "approve") -> DecisionOutcome:
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        outcome = decide(uow.session, action_id=action_id, approver=Approver(who, "cli", True), decision=decision,
                         plan_hash=action.plan_hash, reason="test", now=datetime.now(tz=UTC), ttl_s=3600)
        uow.commit()
    return outcome


def mark_examined(session: Session, end: float, *, shard: int = 0, shards: int = 1) -> None:
    """Set the data time up to which a shard's detection has run, as its cycles would (no detector runs)."""
    name = shard_name(shard, shards)
    row = session.get(DetectorState, name) or DetectorState(shard=name, last_ts=0.0, cycles=0)
    row.last_ts = max(row.last_ts, end)
    session.add(row)
