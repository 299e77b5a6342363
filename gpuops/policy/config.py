"""Policy settings: budgets, rate limits, breaker, freeze windows, and which runbooks may be auto-approved."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from domain.budget import gpus_at_fraction
from gpuops.errors import ConfigError


class FreezeWindow(BaseModel):
    """No disruptive action runs between `starts_at` and `ends_at` (UTC)."""

    starts_at: datetime
    ends_at: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if self.ends_at <= self.starts_at:
            raise ValueError("a freeze window must end after it starts")
        return self


class PolicyConfig(BaseModel):
    """Safety budgets. Defaults are conservative; every field can be set in a YAML file
    (`GPUOPS_POLICY_FILE`)."""

    max_nodes_out: int = Field(default=2, ge=0, description="nodes cordoned or draining at once, absolute")
    max_nodes_out_fraction: float = Field(default=0.10, ge=0, le=1, description="… and as a fraction of the fleet")
    min_healthy_gpu_fraction: float = Field(default=0.80, ge=0, le=1)
    node_cooldown_s: float = Field(default=3600, ge=0, description="between two incidents' actions on one node")
    repeat_window_s: float = Field(default=7 * 86400, ge=0)
    repeat_limit: int = Field(default=2, ge=1, description="remediations in the window before a node goes to a human")
    job_restart_window_s: float = Field(default=6 * 3600, ge=0)
    job_restart_limit: int = Field(
        default=2, ge=1, description="restarts gpuops made of one job, for other incidents, within the window "
                                     "before the next restart goes to a human (restarting does not fix it)")
    max_actions_per_hour: int = Field(default=20, ge=0, description="fleet-wide executions per hour")
    breaker_failures: int = Field(default=3, ge=1, description="failed verifications that open the breaker")
    breaker_window_s: float = Field(default=3600, ge=1)
    approval_ttl_s: float = Field(default=3600, ge=60, description="how long an approval stays valid")
    auto_approve: frozenset[str] = Field(default=frozenset({"notify_only"}),
                                         description="runbooks policy may approve alone (low risk only)")
    freeze_windows: tuple[FreezeWindow, ...] = ()
    common_cause_window_s: float = Field(
        default=900, ge=0, description="a node action for a fault family also seen on another node within this "
                                       "window goes to a human (a rollout reaching nodes one by one); 0 turns it off")
    common_cause_baseline_s: float = Field(
        default=30 * 86400, gt=0, description="the span over which the fleet's own rate of each family is counted: "
                                              "on a large fleet, independent faults of one family meet within the "
                                              "window by chance, and only more of them than that rate explains "
                                              "point to a common cause")
    common_cause_max_chance: float = Field(
        default=0.01, gt=0, lt=1, description="the hold applies when chance alone (the family's rate over the "
                                              "baseline, Poisson) would put at least that many other hosts in "
                                              "the window at most this often")
    soak_s: float = Field(
        default=180, ge=0, description="a node action waits until this much telemetry after its incident opened "
                                       "has been examined, so that a common cause reaching other nodes shows "
                                       "before gpuops acts on the first; 0 turns it off")
    probation_s: float = Field(
        default=1800, ge=0, description="after a verified remediation, a node gpuops holds out stays out until this "
                                        "much telemetry (data time, as examined by every detection shard) shows "
                                        "its GPUs healthy; then gpuops returns it to service")
    fence_gpus: bool = Field(
        default=True, description="a node whose one GPU needs replacing, and that the device plugin still offers, "
                                  "has that GPU fenced off by the node agent (fence_gpu) so that it returns to "
                                  "service with its other GPUs, and where the healthy-GPU floor will not let "
                                  "the node out, the GPU alone is isolated in service (isolate_gpu); false keeps "
                                  "such a node out until its repair, and forbids both")
    return_without_port: bool = Field(
        default=True, description="a node whose one InfiniBand port (cable, transceiver or HCA) waits for repair, "
                                  "with nothing else wrong, returns to service under the NoSchedule taint "
                                  "gpuops.io/fabric-degraded=<HCA> for the work that tolerates it (work that stays "
                                  "inside the node); false keeps such a node out until its repair")
    budget_wait_s: float = Field(
        default=3600, ge=0, description="a node action the nodes-out budget or the healthy-GPU minimum refuses only "
                                        "because of nodes gpuops itself has out (remediating, or on probation, "
                                        "which return by themselves) waits up to this long for "
                                        "them to come back before a human is asked; 0 turns it off")

    def nodes_out_limit(self, fleet_nodes: int) -> int:
        """The smaller of the absolute and fractional budgets. A fraction that rounds below one node still allows
        one (else a fleet smaller than 1/fraction could never take a failed node out); a fraction of 0, or
        `max_nodes_out: 0`, forbids node actions."""
        if self.max_nodes_out_fraction <= 0 or fleet_nodes <= 0:
            return 0
        return min(self.max_nodes_out, max(1, int(self.max_nodes_out_fraction * fleet_nodes)))

    def min_healthy_gpus(self, fleet_gpus: int, node_gpus: int = 0) -> int:
        """The fewest healthy GPUs the fleet keeps: the fraction of its GPUs, rounded up (`gpus_at_fraction`).
        Like the nodes-out budget, it still lets one node of `node_gpus` out when that node alone is more than the
        fraction spares (else four 8-GPU nodes at 80 % could never take a failed node out); a fraction of 1
        forbids every node action."""
        floor = gpus_at_fraction(self.min_healthy_gpu_fraction, fleet_gpus)
        if self.min_healthy_gpu_fraction >= 1 or node_gpus <= 0:
            return floor
        return min(floor, max(0, fleet_gpus - node_gpus))

    def frozen_at(self, now: datetime) -> FreezeWindow | None:
        return next((w for w in self.freeze_windows if w.starts_at <= now < w.ends_at), None)


def load_policy(path: Path | None) -> PolicyConfig:
    """The policy from a YAML file, or the defaults. A bad file stops start-up naming the field."""
    if path is None:
        return PolicyConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return PolicyConfig.model_validate(data)
    except FileNotFoundError as exc:
        raise ConfigError(f"GPUOPS_POLICY_FILE: {path} does not exist") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"GPUOPS_POLICY_FILE: {path} is not a valid policy: {exc}") from exc
