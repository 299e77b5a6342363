"""The cost view on /metrics, read from the store at scrape time (every process reports the same truth). Labels stay
few: idle GPUs are counted per namespace (never one series per GPU or pod); GPU-hours per deployment and per
runbook."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class CostCollector(Collector):
    """Turns `read()` (gpuops.cost.view.cost_view's result, with all-time deployment totals under
    `deployments_total`) into gauges and counters; a store that does not answer yields nothing from here."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            view = self._read()
        except Exception:  # the scrape must still answer when the database is down; gpuops_store_up says so
            return
        idle = GaugeMetricFamily("gpuops_gpus_idle", "GPUs with a pod bound and under the idle utilisation without a "
                                 "break for at least GPUOPS_IDLE_AFTER_SECONDS, per namespace.", labels=["namespace"])
        cost = GaugeMetricFamily("gpuops_gpu_idle_cost_per_hour", "What the idle GPUs cost per hour at the "
                                 "configured GPU-hour prices, per namespace.", labels=["namespace"])
        for namespace, entry in view["idle"]["by_namespace"].items():
            idle.add_metric([namespace], float(entry["gpus"]))
            cost.add_metric([namespace], float(entry["per_hour"]))
        states = GaugeMetricFamily("gpuops_gpus_by_state", "GPUs by the state the cost view last saw them in (busy; "
                                   "low: allocated and under the idle utilisation; unknown: no utilisation sample; "
                                   "free: no pod).", labels=["state"])
        for state, n in sorted(view["gpu_states"].items()):
            states.add_metric([state], float(n))
        provisioned = CounterMetricFamily("gpuops_gpu_hours_provisioned", "GPU-hours a deployment's pods held GPUs "
                                          "that reported utilisation.", labels=["namespace", "deployment"])
        needed = CounterMetricFamily("gpuops_gpu_hours_needed", "GPU-hours a deployment's GPUs were busy "
                                     "(time weighted by utilisation).", labels=["namespace", "deployment"])
        for row in view["deployments_total"]:
            provisioned.add_metric([row["namespace"], row["deployment"]], float(row["provisioned_gpu_hours"]))
            needed.add_metric([row["namespace"], row["deployment"]], float(row["needed_gpu_hours"]))
        lost = CounterMetricFamily("gpuops_gpu_hours_lost", "GPU-hours out of service because of incidents, by the "
                                   "runbook that took them out (none: a hard fault no runbook acted on).",
                                   labels=["runbook"])
        for runbook, hours in sorted(view["losses"]["by_runbook"].items()):
            lost.add_metric([runbook], float(hours))
        yield from (idle, cost, states, provisioned, needed, lost)
