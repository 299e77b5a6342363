"""The autoscaler built from a container: its cluster (which must also read Deployments, HPAs and ScaledObjects),
the demand source the settings name (Prometheus, else the exporters scraped directly), and execution on the
pipeline's clock."""

from __future__ import annotations

from collections.abc import Callable

from connectors.kubernetes import ScalingTargets
from connectors.telemetry.prometheus import PrometheusTelemetry
from connectors.telemetry.serving import PrometheusServingDemand, ScrapedServingDemand, ServingDemand
from gpuops.autoscale.cycle import AutoscaleDeps, Autoscaler
from gpuops.autoscale.settings import AutoscaleSettings, load_autoscale_settings
from gpuops.errors import ConfigError
from gpuops.execution.service import ExecutionDeps
from gpuops.wiring import Container


def demand_from(container: Container, settings: AutoscaleSettings, clock: Callable[[], float]) -> ServingDemand:
    s = container.settings
    if s.prometheus_url:
        return PrometheusServingDemand(PrometheusTelemetry(s.prometheus_url), in_flight_query=settings.in_flight_query,
                                       completed_query=settings.completed_query,
                                       running_by_pod_query=settings.running_by_pod_query or None)
    if s.scrape_urls:
        scraped = ScrapedServingDemand(list(s.scrape_urls), clock=clock)
        container.add_closer(scraped)
        return scraped
    raise ConfigError("autoscaling reads demand from Prometheus or the inference servers' /metrics: set "
                      "GPUOPS_PROMETHEUS_URL or GPUOPS_SCRAPE_URLS")


def autoscaler_for(container: Container, execution: ExecutionDeps, *, settings: AutoscaleSettings | None = None,
                   demand: ServingDemand | None = None) -> Autoscaler:
    """The autoscaler for a pipeline (`execution`: its execution dependencies, clock included)."""
    settings = settings or load_autoscale_settings()
    cluster = container.cluster
    if not isinstance(cluster, ScalingTargets):
        raise ConfigError("the configured cluster connection cannot list Deployments, HPAs and ScaledObjects; "
                          "autoscaling needs the Kubernetes API (GPUOPS_KUBE_API_URL or a kubeconfig)")
    return Autoscaler(AutoscaleDeps(uow=container.uow, cluster=cluster,
                                    demand=demand or demand_from(container, settings, execution.clock),
                                    settings=settings, execution=execution,
                                    metrics=container.metrics, dry_run=container.settings.dry_run,
                                    ask_approval=lambda action_id: container.notifier.approval_requested(action_id)))
