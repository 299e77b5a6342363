"""The fleet at a glance: every node's GPUs coloured by health and risk (open incidents, recent findings), the nodes
out of service (gpuops' leases and, when a cluster is configured, its cordons), and the safety budgets in use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.kubernetes.errors import ClusterError
from connectors.kubernetes.models import NodeInfo
from connectors.telemetry import TelemetryError
from domain import IncidentStatus, Severity
from gpuops.errors import ConfigError
from gpuops.policy.engine import POLICY_ROW
from gpuops.store.models import Action, FindingRecord, Incident, NodeLease, PolicyState
from gpuops.wiring import Container

RANK = {"ok": 0, Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}
FINDINGS_WINDOW = timedelta(hours=6)


@dataclass
class GpuCell:
    gpu: int
    health: str = "ok"            # ok | info | warning | critical: the worst open incident or recent finding
    incidents: list[int] = field(default_factory=list)
    findings: int = 0
    risk: float = 0.0             # the highest recent finding score


@dataclass
class NodeRow:
    name: str
    gpus: dict[int, GpuCell] = field(default_factory=dict)
    health: str = "ok"
    incidents: list[int] = field(default_factory=list)
    cordoned: bool = False
    cordoned_by: str = ""         # gpuops | someone else
    ready: bool | None = None
    lease: str = ""

    def cell(self, gpu: int) -> GpuCell:
        return self.gpus.setdefault(gpu, GpuCell(gpu))


def _worse(a: str, b: str) -> str:
    return a if RANK.get(a, 0) >= RANK.get(b, 0) else b


def cluster_configured(container: Container) -> bool:
    return container.cluster_configured


def _cluster_nodes(container: Container) -> tuple[list[NodeInfo], str]:
    if not cluster_configured(container):
        return [], "no cluster configured (GPUOPS_KUBE_API_URL, GPUOPS_KUBECONFIG or GPUOPS_KUBE_IN_CLUSTER)"
    try:
        return container.cluster.list_nodes(), "ok"
    except ClusterError as exc:
        return [], f"cluster unreachable: {exc}"


def _telemetry_gpus(container: Container, now: datetime) -> tuple[list[tuple[str, int]], str]:
    step = container.settings.step_seconds
    end = now.timestamp()
    try:
        frame = container.telemetry.frame(end - 4 * step, end, step, metrics=["DCGM_FI_DEV_GPU_TEMP"],
                                          node_series={})
    except ConfigError:
        return [], "no telemetry source"
    except (TelemetryError, ValueError) as exc:
        return [], f"telemetry unavailable: {exc}"
    return list(zip(frame.gpus.hostname, frame.gpus.gpu, strict=True)), "ok"


def fleet_view(container: Container, session: Session, now: datetime) -> dict[str, Any]:
    rows: dict[str, NodeRow] = {}

    def node(name: str) -> NodeRow:
        return rows.setdefault(name, NodeRow(name))

    infos, cluster_state = _cluster_nodes(container)
    for info in infos:
        row = node(info.name)
        row.ready, row.cordoned = info.ready, info.unschedulable
        row.cordoned_by = ("gpuops" if info.cordoned_by_gpuops else "someone else") if info.unschedulable else ""
        for g in range(info.gpu_capacity):
            row.cell(g)
    seen, telemetry_state = _telemetry_gpus(container, now)
    for host, gpu in seen:
        node(host).cell(gpu)

    active = session.scalars(select(Incident).where(Incident.status.in_(IncidentStatus.ACTIVE),
                                                    Incident.hostname.is_not(None)))
    for inc in active:
        assert inc.hostname is not None
        row = node(inc.hostname)
        if inc.gpu is None:
            row.incidents.append(inc.id)
            row.health = _worse(row.health, inc.severity)
        else:
            cell = row.cell(inc.gpu)
            cell.incidents.append(inc.id)
            cell.health = _worse(cell.health, inc.severity)
    recent = session.execute(
        select(FindingRecord.hostname, FindingRecord.gpu, FindingRecord.severity, func.count(), func.max(
            FindingRecord.score)).where(FindingRecord.ts >= now - FINDINGS_WINDOW)
        .group_by(FindingRecord.hostname, FindingRecord.gpu, FindingRecord.severity))
    for host, finding_gpu, severity, count, score in recent:
        row = node(host)
        if finding_gpu is None:
            row.health = _worse(row.health, Severity.INFO if severity == Severity.INFO else Severity.WARNING)
            continue
        cell = row.cell(finding_gpu)
        cell.findings += int(count)
        cell.risk = max(cell.risk, float(score or 0.0))
        cell.health = _worse(cell.health, Severity.INFO if severity == Severity.INFO else Severity.WARNING)
    leases = session.execute(select(NodeLease.hostname, NodeLease.reason, NodeLease.action_id)
                             .where(NodeLease.released_at.is_(None)))
    for host, reason, action_id in leases:
        row = node(host)
        row.lease = f"{reason} (action {action_id})"
        row.cordoned, row.cordoned_by = True, row.cordoned_by or "gpuops"

    ordered = [rows[name] for name in sorted(rows)]
    for row in ordered:
        row.gpus = dict(sorted(row.gpus.items()))
        for cell in row.gpus.values():
            cell.health = _worse(cell.health, row.health)
    return {
        "nodes": [_row_json(r) for r in ordered],
        "cluster": cluster_state, "telemetry": telemetry_state,
        "budgets": budgets(container, session, ordered, infos, now),
    }


def _row_json(row: NodeRow) -> dict[str, Any]:
    return {"name": row.name, "health": row.health, "incidents": row.incidents, "cordoned": row.cordoned,
            "cordoned_by": row.cordoned_by, "ready": row.ready, "lease": row.lease,
            "gpus": [{"gpu": c.gpu, "health": c.health, "incidents": c.incidents, "findings": c.findings,
                      "risk": round(c.risk, 3)} for c in row.gpus.values()]}


def budgets(container: Container, session: Session, rows: list[NodeRow], infos: list[NodeInfo],
            now: datetime) -> dict[str, Any]:
    """The policy budgets against what is in use now."""
    policy = container.policy
    out = sorted(r.name for r in rows if r.cordoned or r.ready is False)
    fleet_nodes = len(infos) or len(rows)
    executed = session.scalar(select(func.count()).select_from(Action)
                              .where(Action.executed_at >= now - timedelta(hours=1))) or 0
    state = session.get(PolicyState, POLICY_ROW)
    freeze = policy.frozen_at(now)
    result: dict[str, Any] = {
        "nodes_out": out, "nodes_out_limit": policy.nodes_out_limit(fleet_nodes) if fleet_nodes else
        policy.max_nodes_out, "fleet_nodes": fleet_nodes,
        "actions_last_hour": int(executed), "actions_per_hour_limit": policy.max_actions_per_hour,
        "breaker_open": bool(state and state.breaker_open), "breaker_reason": state.breaker_reason if state else "",
        "freeze": {"until": freeze.ends_at.isoformat(), "reason": freeze.reason} if freeze else None,
        "approval_ttl_s": policy.approval_ttl_s,
    }
    if infos:
        gpus = sum(n.gpu_capacity for n in infos)
        result["healthy_gpus"] = sum(n.gpu_allocatable for n in infos if n.ready and not n.unschedulable)
        # policy's own rounding, and its allowance of one node out of a small fleet
        result["min_healthy_gpus"] = policy.min_healthy_gpus(gpus, max(n.gpu_capacity for n in infos))
    return result
