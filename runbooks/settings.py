"""The runbooks' own settings: bounds, timeouts and deadlines, one typed object passed to every step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ReplicaBounds(BaseModel):
    """The replica counts `scale_deployment` may set for one deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        return self


class RunbookSettings(BaseModel):
    """Every knob the runbooks read. Deadlines are seconds of cluster time (the clock steps are given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_replica_bounds: ReplicaBounds | None = Field(
        default=None, description="bounds for every deployment not in `replica_bounds`; None: such a deployment "
        "keeps at least one replica and grows by at most `max_scale_factor` in one action")
    replica_bounds: dict[str, ReplicaBounds] = Field(
        default_factory=dict, description='per deployment, keyed "namespace/name"'
    )
    max_scale_factor: float = Field(
        default=2.0, ge=1.0, description="a deployment without configured bounds is scaled to at most this many "
        "times the replicas it wants now (a planner's mistake costs at most that much), and never below 1")
    drain_timeout_s: float = Field(default=900.0, gt=0, description="how long a drain retries blocked evictions")
    evict_retry_interval_s: float = Field(default=5.0, gt=0)
    checkpoint_deadline_s: float = Field(default=300.0, ge=0, description="how long a drain waits for checkpoints")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often waits re-read the cluster")
    default_grace_period_s: int | None = Field(
        default=None, ge=0, description="grace period for evictions; None = each pod's own"
    )
    gpu_reset_timeout_s: float = Field(default=600.0, gt=0)
    node_reboot_timeout_s: float = Field(default=1800.0, gt=0)
    verify_deadline_s: float | None = Field(
        default=None, gt=0, description="overrides every runbook's verify deadline when set"
    )
    hardware_ticket_webhook_url: str | None = None
    hardware_ticket_timeout_s: float = Field(default=10.0, gt=0)
    checkpoint_marker_annotations: tuple[str, ...] = Field(
        default=("gpuops.io/checkpointable", "sim.gpuops.io/checkpoint-seconds"),
        description="a pod carrying any of these annotations belongs to a training job that can checkpoint",
    )
    assumed_checkpoint_interval_s: float = Field(
        default=3600.0, gt=0, description="work a job without a fresh checkpoint is assumed to lose when moved"
    )
    restart_overhead_s: float = Field(default=600.0, ge=0, description="GPU time a checkpointed job loses restarting")
    expected_gpu_reset_s: float = Field(default=120.0, ge=0, description="how long a reset takes a GPU away")
    expected_reboot_s: float = Field(default=900.0, ge=0, description="how long a reboot takes a node away")
    action_taint_key: str = "gpuops.io/unhealthy"

    @field_validator("hardware_ticket_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL for the hardware-ticket webhook")
        return value

    @field_validator("replica_bounds")
    @classmethod
    def _keys(cls, value: dict[str, ReplicaBounds]) -> dict[str, ReplicaBounds]:
        for key in value:
            if key.count("/") != 1 or not all(key.split("/")):
                raise ValueError(f'replica bounds are keyed "namespace/name", not {key!r}')
        return value

    def bounds_for(self, namespace: str, name: str) -> ReplicaBounds | None:
        """The bounds configured for a deployment (its own, else the default), or None when none are."""
        return self.replica_bounds.get(f"{namespace}/{name}", self.default_replica_bounds)
