"""The cost view read from the store: idle GPUs with their cost, GPU-hours provisioned against needed per
deployment, and GPU-hours lost per incident, runbook and week. The page, /api/cost and /metrics all read it here."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpuops.config import Settings
from gpuops.cost.losses import SAVED_NOTE, incident_losses, totals
from gpuops.cost.tracking import LOW
from gpuops.store.models import GpuHours, GpuUsage

NEEDED_MEANS = ("needed = the GPU-hours the deployment's GPUs were busy: each sample's time weighted by its GPU "
                "utilisation (DCGM_FI_DEV_GPU_UTIL, 0–100 %), so a GPU at 25 % for an hour needed 0.25 GPU-hours; "
                "provisioned = the GPU-hours its pods held a GPU that reported a utilisation sample")


@dataclass(frozen=True)
class Pricing:
    """The price of a GPU-hour: the first model whose name appears in dcgm-exporter's modelName, else the default."""

    default: float
    by_model: Sequence[tuple[str, float]] = ()

    def of(self, model_name: str) -> float:
        name = model_name.lower()
        return next((price for model, price in self.by_model if model.lower() in name), self.default)


def idle_gpus(session: Session, *, idle_after_s: float, pricing: Pricing) -> list[dict[str, Any]]:
    """GPUs with a pod bound and under the idle utilisation without a break for at least `idle_after_s`, the
    longest idle first, with their cost so far and per hour."""
    rows = session.scalars(select(GpuUsage).where(GpuUsage.state == LOW, GpuUsage.low_since.is_not(None))).all()
    out = []
    for row in rows:
        assert row.low_since is not None
        idle_s = (row.seen_at - row.low_since).total_seconds()
        if idle_s < idle_after_s:
            continue
        price = pricing.of(row.model_name)
        out.append({"hostname": row.hostname, "gpu": row.gpu, "model": row.model_name, "namespace": row.namespace,
                    "pod": row.pod, "deployment": row.deployment, "idle_since": row.low_since.isoformat(),
                    "seen_at": row.seen_at.isoformat(), "idle_hours": round(idle_s / 3600, 3),
                    "price_per_hour": price, "cost": round(price * idle_s / 3600, 2)})
    return sorted(out, key=lambda r: (-r["idle_hours"], r["hostname"], r["gpu"]))


def gpu_states(session: Session) -> dict[str, int]:
    """How many GPUs the cost view last saw in each state (busy, low, unknown, free)."""
    return {state: int(n) for state, n in session.execute(
        select(GpuUsage.state, func.count()).group_by(GpuUsage.state))}


def deployment_hours(session: Session, *, since_day: str | None = None) -> list[dict[str, Any]]:
    """GPU-hours provisioned and needed per (namespace, deployment), from `since_day` (YYYY-MM-DD, UTC) or ever."""
    stmt = select(GpuHours.namespace, GpuHours.deployment, func.sum(GpuHours.provisioned_s),
                  func.sum(GpuHours.busy_s)).group_by(GpuHours.namespace, GpuHours.deployment)
    if since_day is not None:
        stmt = stmt.where(GpuHours.day >= since_day)
    out = []
    for namespace, deployment, provisioned_s, busy_s in session.execute(stmt):
        provisioned, needed = float(provisioned_s or 0) / 3600, float(busy_s or 0) / 3600
        out.append({"namespace": namespace, "deployment": deployment, "provisioned_gpu_hours": round(provisioned, 3),
                    "needed_gpu_hours": round(needed, 3),
                    "utilisation": round(needed / provisioned, 3) if provisioned > 0 else None})
    return sorted(out, key=lambda r: (-r["provisioned_gpu_hours"], r["namespace"], r["deployment"]))


def gpus_per_node(session: Session) -> dict[str, int]:
    return {host: int(n) for host, n in session.execute(
        select(GpuUsage.hostname, func.count()).group_by(GpuUsage.hostname))}


def losses_view(session: Session, *, now: datetime, default_gpus_per_node: int) -> dict[str, Any]:
    per_node = gpus_per_node(session)
    common = Counter(per_node.values()).most_common(1)
    losses = incident_losses(session, now=now, gpus_per_node=per_node,
                             default_gpus_per_node=common[0][0] if common else default_gpus_per_node)
    by_runbook, by_week = totals(losses)
    return {
        "incidents": [{"incident_id": x.incident_id, "title": x.title, "hostname": x.hostname, "runbook": x.runbook,
                       "gpu_hours_lost": round(x.gpu_hours, 3)} for x in losses],
        "by_runbook": {k: round(v, 3) for k, v in sorted(by_runbook.items(), key=lambda kv: -kv[1])},
        "by_week": {k: round(v, 3) for k, v in by_week.items()},
        "gpu_hours_saved": None, "saved_note": SAVED_NOTE,
    }


def cost_view(session: Session, *, now: datetime, idle_after_s: float, pricing: Pricing, days: int = 7,
              default_gpus_per_node: int = 8) -> dict[str, Any]:
    """Everything the cost page and /api/cost show."""
    idle = idle_gpus(session, idle_after_s=idle_after_s, pricing=pricing)
    by_namespace: dict[str, dict[str, float]] = defaultdict(lambda: {"gpus": 0, "cost": 0.0, "per_hour": 0.0})
    for row in idle:
        entry = by_namespace[row["namespace"]]
        entry["gpus"] += 1
        entry["cost"] = round(entry["cost"] + row["cost"], 2)
        entry["per_hour"] = round(entry["per_hour"] + row["price_per_hour"], 2)
    since = (now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
    deployments = deployment_hours(session, since_day=since)
    for row in deployments:
        row["unused_cost"] = round((row["provisioned_gpu_hours"] - row["needed_gpu_hours"]) * pricing.default, 2)
    return {
        "now": now.isoformat(), "idle_after_hours": round(idle_after_s / 3600, 3),
        "price_per_gpu_hour": pricing.default, "prices_by_model": dict(pricing.by_model),
        "gpu_states": gpu_states(session),
        "idle": {"gpus": idle, "by_namespace": dict(sorted(by_namespace.items())),
                 "cost_per_hour": round(sum(r["price_per_hour"] for r in idle), 2)},
        "deployments": {"days": days, "since": since, "rows": deployments, "needed_means": NEEDED_MEANS},
        "losses": losses_view(session, now=now, default_gpus_per_node=default_gpus_per_node),
    }


def settings_view(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """`cost_view` with the installation's prices and idle time."""
    return cost_view(session, now=now, idle_after_s=settings.idle_after_seconds,
                     pricing=Pricing(settings.gpu_hour_price, settings.gpu_hour_prices))
