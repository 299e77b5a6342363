"""Policy for the autoscaler's own changes: what replica count a Deployment may get now, and whether policy
approves it alone or a human must.

* the count stays within the Deployment's bounds (its `gpuops.io/min-replicas` / `max-replicas`);
* a scale-down waits until `cooldown_s` after gpuops last scaled that Deployment (replicas are not shed and
  restarted back and forth);
* the GPUs held by all autoscaled Deployments together stay within `gpu_budget` without asking: a scale-up that
  fits is approved by policy; one that does not is approved as far as it fits, and the whole of it goes to a
  human. Scale-downs are weighed first: they free budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Gate = Literal["auto", "approval", "hold"]
AUTOSCALE_FAMILY = "autoscale"
"""The family of the autoscaler's incidents: its scale actions have this policy, not the remediation budgets
(their hourly rate limit would otherwise be spent on replica changes)."""


@dataclass(frozen=True)
class ScaleRequest:
    """What the autoscaler wants for one Deployment it manages."""

    namespace: str
    name: str
    current: int
    wanted: int
    min_replicas: int
    max_replicas: int
    gpus_per_replica: int
    last_scaled_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class ScaleVerdict:
    namespace: str
    name: str
    current: int
    replicas: int
    gate: Gate
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ScalePolicy:
    gpu_budget: int
    cooldown_s: float


def weigh_scaling(requests: Sequence[ScaleRequest], *, policy: ScalePolicy, now: datetime) -> list[ScaleVerdict]:
    """Verdicts for every request whose bounded count differs from its current one, scale-downs first."""
    held = sum(r.current * r.gpus_per_replica for r in requests)
    verdicts: list[ScaleVerdict] = []
    ups: list[tuple[ScaleRequest, int, list[str]]] = []
    for r in sorted(requests, key=lambda r: (r.namespace, r.name)):
        target = min(max(r.wanted, r.min_replicas), r.max_replicas)
        notes = [] if target == r.wanted else [
            f"the plan's {r.wanted} replicas bounded to {target} ({r.min_replicas}..{r.max_replicas})"]
        if target == r.current:
            continue
        if target > r.current:
            ups.append((r, target, notes))
            continue
        if r.last_scaled_at is not None and now < r.last_scaled_at + timedelta(seconds=policy.cooldown_s):
            until = r.last_scaled_at + timedelta(seconds=policy.cooldown_s)
            verdicts.append(ScaleVerdict(r.namespace, r.name, r.current, target, "hold", [
                *notes, f"cool-down: scaled at {r.last_scaled_at.isoformat()}, no scale-down before "
                        f"{until.isoformat()}"]))
            continue
        held -= (r.current - target) * r.gpus_per_replica
        verdicts.append(ScaleVerdict(r.namespace, r.name, r.current, target, "auto",
                                     [*notes, f"scale-down frees {(r.current - target) * r.gpus_per_replica} GPUs"]))
    for r, target, notes in ups:
        need = (target - r.current) * r.gpus_per_replica
        if held + need <= policy.gpu_budget:
            held += need
            verdicts.append(ScaleVerdict(r.namespace, r.name, r.current, target, "auto", [
                *notes, f"within the autoscaling budget: {held} of {policy.gpu_budget} GPUs after it"]))
            continue
        fits = r.current + max(0, policy.gpu_budget - held) // max(1, r.gpus_per_replica)
        over = (f"budget: autoscaled Deployments hold {held} GPUs; {target} replicas need {need} more, above the "
                f"autoscaling budget of {policy.gpu_budget}")
        if fits > r.current:
            held += (fits - r.current) * r.gpus_per_replica
            verdicts.append(ScaleVerdict(r.namespace, r.name, r.current, fits, "auto", [
                *notes, f"as far as the autoscaling budget allows ({held} of {policy.gpu_budget} GPUs)"]))
        verdicts.append(ScaleVerdict(r.namespace, r.name, r.current, target, "approval",
                                     [*notes, over, "a human decides on the GPUs above the budget"]))
    return verdicts
