"""The live autoscaler's settings (`GPUOPS_AUTOSCALE_*`): one typed object that fails fast, naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuops.errors import ConfigError

PREFIX = "GPUOPS_AUTOSCALE_"
DEFAULT_IN_FLIGHT_QUERY = (
    'sum by (namespace, deployment) ({__name__=~"vllm:num_requests_running|vllm:num_requests_waiting"})'
)
DEFAULT_COMPLETED_QUERY = "sum by (namespace, deployment) (vllm:request_success_total)"
DEFAULT_RUNNING_BY_POD_QUERY = "sum by (namespace, deployment, pod) (vllm:num_requests_running)"


class AutoscaleSettings(BaseSettings):
    """What the autoscaling cycle reads and what bounds it. Queries return one series per Deployment, labelled
    `namespace` and `deployment` (relabel the pod's app label into `deployment` in the PodMonitor, or give a
    Deployment its own queries in the `gpuops.io/in-flight-query` and `gpuops.io/completed-query` annotations)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    enabled: bool = False
    period_seconds: float = Field(default=15.0, gt=0, le=600)
    label_selector: str = Field(default="gpuops.io/autoscale=true", min_length=1)
    gpu_budget: int = Field(default=16, ge=0, description="GPUs gpuops may hold for autoscaled Deployments without "
                                                         "asking a human")
    # a guard against flapping faster than a model loads (GenTD26: p90 42 s), not the hysteresis itself: the
    # planner already holds a replica one cold start past need. Live on a day of GenTD26's replay
    # (`python -m bench autoscale_live`), 300 s held 19 % more GPU-hours than 60 s for the same waits.
    scale_down_cooldown_seconds: float = Field(default=60.0, ge=0)
    in_flight_query: str = Field(default=DEFAULT_IN_FLIGHT_QUERY, min_length=1)
    completed_query: str = Field(default=DEFAULT_COMPLETED_QUERY, min_length=1)
    # which replicas are serving, so a scale-down spares them (empty: Kubernetes picks the pods to remove)
    running_by_pod_query: str = DEFAULT_RUNNING_BY_POD_QUERY
    history_seconds: float = Field(default=86400.0, ge=0, le=7 * 86400,
                                   description="demand history read at start, so the daily profile is known at once")
    warm_value_seconds: float = Field(default=3600.0, gt=0)
    default_max_replicas: int = Field(default=8, ge=0)


def load_autoscale_settings(env: Mapping[str, str] | None = None) -> AutoscaleSettings:
    """From the process environment, or `env` (tests). Raises ConfigError naming every bad variable."""
    try:
        if env is None:
            return AutoscaleSettings()
        data: dict[str, Any] = {name: env[PREFIX + name.upper()] for name in AutoscaleSettings.model_fields
                                if PREFIX + name.upper() in env}
        return AutoscaleSettings.model_validate(data)
    except ValidationError as exc:
        problems = [f"{PREFIX}{str(e['loc'][0]).upper() if e['loc'] else ''}: {e['msg']} (got {e.get('input')!r})"
                    for e in exc.errors()]
        raise ConfigError("invalid autoscaling configuration: " + "; ".join(problems)) from exc
