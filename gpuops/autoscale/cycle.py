"""The live autoscaling cycle: every period, discover the inference Deployments that opted in, read their demand,
learn their cold starts from their pods (created → Ready), plan with `LiveScaler`, publish the plan as
`gpuops_desired_replicas`, and, where no HPA or KEDA ScaledObject owns the Deployment, scale it through the
`scale_deployment` runbook under the autoscaling policy (bounds, GPU budget, scale-down cool-down).

Demand is read as counts: requests in flight (running + waiting) and requests served (a counter). The arrivals
of a cycle are the served ones since the last reading plus the change in flight, so any process can run a cycle
(a Celery worker that did not run the previous one just sees a longer interval)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from connectors.kubernetes import ClusterError, ScalingTargets, ServedDeployment
from connectors.telemetry.errors import TelemetryError
from connectors.telemetry.serving import DemandSample, ServingDemand
from domain import ActionStatus
from gpuops.autoscale.live import DemandReading, DeploymentKey, LiveScaler
from gpuops.autoscale.planner import PlannerSettings
from gpuops.autoscale.records import (
    awaiting_decision,
    claim_cycle,
    deployment_target,
    is_autoscale_incident,
    last_scaled_at,
    record_decision,
    settle,
)
from gpuops.autoscale.settings import AutoscaleSettings
from gpuops.execution.service import ExecutionDeps, execute
from gpuops.policy.autoscale import ScalePolicy, ScaleRequest, ScaleVerdict, weigh_scaling
from gpuops.service_metrics import ServiceMetrics
from gpuops.store.models import AutoscaleColdStart, Incident
from gpuops.store.uow import UnitOfWork
from runbooks import RunbookContext
from runbooks.scale import OwnerBounds, owner_bounds

log = logging.getLogger(__name__)

COLD_STARTS_READ = 5000  # the most recent recorded cold starts a new planner starts from
IN_FLIGHT_QUERY_ANNOTATION = "gpuops.io/in-flight-query"
COMPLETED_QUERY_ANNOTATION = "gpuops.io/completed-query"


@dataclass
class ScaledDeployment:
    """One Deployment in one cycle: what was read, planned and decided."""

    key: str
    replicas: int
    in_flight: float | None = None
    arrivals: int | None = None
    desired: int | None = None
    cold_start_s: float | None = None
    owner: str = "gpuops"  # gpuops | hpa-or-keda
    decision: str = ""


@dataclass
class AutoscaleReport:
    """What a cycle did; `errors` name what could not be read (and so was not acted on)."""

    now: float
    deployments: list[ScaledDeployment] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cold_starts: list[tuple[str, float]] = field(default_factory=list)
    skipped: str = ""  # why nothing was done (this period's cycle ran elsewhere)

    def of(self, key: str) -> ScaledDeployment | None:
        return next((d for d in self.deployments if d.key == key), None)


@dataclass
class AutoscaleDeps:
    uow: Callable[[], UnitOfWork]
    cluster: ScalingTargets
    demand: ServingDemand
    settings: AutoscaleSettings
    execution: ExecutionDeps
    metrics: ServiceMetrics
    dry_run: bool = False
    ask_approval: Callable[[int], None] | None = None  # tells the approvers (Slack) about an action that waits


class Autoscaler:
    """The cycle's state in one process: the planner over the current set of Deployments, the last demand
    reading, and the pods whose cold start has been learned."""

    def __init__(self, deps: AutoscaleDeps) -> None:
        self.deps = deps
        self.scaler: LiveScaler | None = None
        self._last: DemandSample | None = None
        self._learned: set[str] = set()
        self._fed = 0  # the last recorded cold start handed to the planner

    # -- one cycle -----------------------------------------------------------------------------------------

    def run(self, now: float) -> AutoscaleReport:
        report = AutoscaleReport(now)
        d, s = self.deps, self.deps.settings
        with d.uow() as uow:
            ran = claim_cycle(uow.session, now=now, min_gap_s=s.period_seconds / 2, worker=d.execution.worker)
            uow.commit()
        if ran is not None:
            report.skipped = f"another worker ran the cycle at {_dt(ran).isoformat()}"
            log.info("autoscale: %s", report.skipped)
            return report
        try:
            found = d.cluster.list_served_deployments(s.label_selector)
            elsewhere = d.cluster.autoscaled_elsewhere()
        except ClusterError as exc:
            report.errors.append(f"cannot list the Deployments to scale: {exc}")
            log.error("autoscale: %s", report.errors[-1])
            return report
        deployments: dict[DeploymentKey, ServedDeployment] = {(x.namespace, x.name): x for x in found}
        bounds: dict[DeploymentKey, OwnerBounds] = {}
        for key, dep in sorted(deployments.items()):
            try:
                bounds[key] = owner_bounds(dep.annotations, s.default_max_replicas)
            except ValueError as exc:
                report.errors.append(f"{key[0]}/{key[1]}: {exc}; it is not scaled until the annotation is fixed")
        if self.scaler is None or set(self.scaler.deployments) != set(deployments):
            self._start(sorted(deployments), now, report)
        assert self.scaler is not None
        sample = self._sample(deployments, now, report)
        if sample is None:
            return report
        readings = self._readings(deployments, sample, report)
        seen = self._cold_starts(deployments, report)
        desired = self.scaler.cycle(now, readings, seen)
        self._last = sample
        published = {k: v for k, v in desired.items() if k in readings}
        d.metrics.publish_desired_replicas(published)
        requests = []
        with d.uow() as uow:
            pending = awaiting_decision(uow.session)
            for key in sorted(readings):
                dep, reading = deployments[key], readings[key]
                i = self.scaler.deployments.index(key)
                row = ScaledDeployment(f"{key[0]}/{key[1]}", dep.replicas, reading.in_flight, reading.arrivals,
                                       desired[key], float(self.scaler.planner.cold_start_s[i]))
                report.deployments.append(row)
                if key in elsewhere:
                    row.owner, row.decision = "hpa-or-keda", "published only: an HPA or KEDA ScaledObject owns it"
                    continue
                if key not in bounds:
                    row.decision = "not scaled: its bounds annotations are malformed"
                    continue
                waiting = pending.get(deployment_target(*key).key())
                if waiting is not None:
                    row.decision = f"action {waiting} waits for a human; no new decision until it is decided"
                    continue
                requests.append(ScaleRequest(key[0], key[1], dep.replicas, desired[key], bounds[key].min_replicas,
                                             bounds[key].max_replicas, dep.gpus_per_replica,
                                             last_scaled_at(uow.session, *key), _why(reading, desired[key])))
        verdicts = weigh_scaling(requests, policy=ScalePolicy(s.gpu_budget, s.scale_down_cooldown_seconds),
                                 now=_dt(now))
        self._act(verdicts, {(r.namespace, r.name): r for r in requests}, bounds, sample.busy, report)
        return report

    # -- reading -------------------------------------------------------------------------------------------

    def _start(self, keys: list[DeploymentKey], now: float, report: AutoscaleReport) -> None:
        """A planner for this set of Deployments, its daily profile filled from the demand history."""
        s = self.deps.settings
        self.scaler = LiveScaler(keys, PlannerSettings(period_s=s.period_seconds, warm_value_s=s.warm_value_seconds))
        self._last = None
        self._fed = 0
        if s.history_seconds <= 0 or not keys:
            return
        try:
            history = self.deps.demand.history(now - s.history_seconds, now - s.period_seconds, s.period_seconds)
        except TelemetryError as exc:
            report.errors.append(f"demand history unavailable ({exc}); the planner starts without a daily profile")
            log.warning("autoscale: %s", report.errors[-1])
            return
        previous: DemandSample | None = None
        for sample in history:
            if previous is not None:
                readings = {key: DemandReading(_arrivals(previous, sample, key), int(sample.in_flight.get(key, 0)),
                                               int(sample.in_flight.get(key, 0))) for key in keys}
                self.scaler.cycle(sample.ts, readings)
            previous = sample
        self._last = previous
        log.info("autoscale: planner started", extra={"deployments": len(keys), "history_samples": len(history)})

    def _sample(self, deployments: Mapping[DeploymentKey, ServedDeployment], now: float,
                report: AutoscaleReport) -> DemandSample | None:
        try:
            sample = self.deps.demand.sample(now)
            in_flight, completed = dict(sample.in_flight), dict(sample.completed)
            for key, dep in deployments.items():
                own_in = dep.annotations.get(IN_FLIGHT_QUERY_ANNOTATION)
                own_done = dep.annotations.get(COMPLETED_QUERY_ANNOTATION)
                for query, into in ((own_in, in_flight), (own_done, completed)):
                    if query:
                        value = self.deps.demand.query_one(query, now)
                        if value is None:
                            into.pop(key, None)
                        else:
                            into[key] = value
        except TelemetryError as exc:
            report.errors.append(f"demand could not be read: {exc}; nothing is scaled this cycle")
            log.error("autoscale: %s", report.errors[-1])
            return None
        return replace(sample, in_flight=in_flight, completed=completed)

    def _readings(self, deployments: Mapping[DeploymentKey, ServedDeployment], sample: DemandSample,
                  report: AutoscaleReport) -> dict[DeploymentKey, DemandReading]:
        readings = {}
        for key, dep in sorted(deployments.items()):
            if key not in sample.in_flight or key not in sample.completed:
                missing = "requests in flight" if key not in sample.in_flight else "requests served"
                report.errors.append(f"{key[0]}/{key[1]}: no series for {missing}; check the query (or the "
                                     f"Deployment's {IN_FLIGHT_QUERY_ANNOTATION} / {COMPLETED_QUERY_ANNOTATION}): "
                                     "it is not scaled this cycle")
                continue
            arrivals = _arrivals(self._last, sample, key) if self._last is not None else 0
            readings[key] = DemandReading(arrivals, round(sample.in_flight[key]), dep.replicas)
        return readings

    def _cold_starts(self, deployments: Mapping[DeploymentKey, ServedDeployment],
                     report: AutoscaleReport) -> list[tuple[DeploymentKey, float]]:
        """Record the cold starts of pods that turned Ready (once per pod, whoever saw it first), then hand the
        planner every recorded one it has not had yet: other workers' and earlier runs' too."""
        seen: list[AutoscaleColdStart] = []
        for key, dep in sorted(deployments.items()):
            if not dep.selector:
                continue
            try:
                pods = self.deps.cluster.list_replica_starts(key[0], dep.selector)
            except ClusterError as exc:
                report.errors.append(f"{key[0]}/{key[1]}: its pods could not be listed ({exc})")
                continue
            for pod in pods:
                if pod.ready_at is None or (pod.uid or pod.name) in self._learned:
                    continue
                self._learned.add(pod.uid or pod.name)
                seconds = max(0.0, pod.ready_at - pod.created_at)
                seen.append(AutoscaleColdStart(namespace=key[0], deployment=key[1], pod=pod.uid or pod.name,
                                               seconds=seconds, ready_at=_dt(pod.ready_at)))
                report.cold_starts.append((f"{key[0]}/{key[1]}", seconds))
        if seen:
            with self.deps.uow() as uow:
                known = set(uow.session.scalars(select(AutoscaleColdStart.pod).where(
                    AutoscaleColdStart.pod.in_([row.pod for row in seen]))))
                uow.session.add_all(row for row in seen if row.pod not in known)
                try:
                    uow.commit()
                except IntegrityError:  # another worker recorded the same pods just now
                    uow.rollback()
        with self.deps.uow() as uow:
            rows = uow.session.execute(select(AutoscaleColdStart.id, AutoscaleColdStart.namespace,
                                              AutoscaleColdStart.deployment, AutoscaleColdStart.seconds).where(
                AutoscaleColdStart.id > self._fed).order_by(AutoscaleColdStart.id.desc()).limit(COLD_STARTS_READ)).all()
        if rows:
            self._fed = max(row.id for row in rows)
        return [((row.namespace, row.deployment), float(row.seconds)) for row in reversed(rows)]

    # -- acting --------------------------------------------------------------------------------------------

    def _act(self, verdicts: list[ScaleVerdict], requests: Mapping[DeploymentKey, ScaleRequest],
             bounds: Mapping[DeploymentKey, OwnerBounds], busy: Mapping[DeploymentKey, Mapping[str, int]],
             report: AutoscaleReport) -> None:
        d = self.deps
        for verdict in verdicts:
            now = max(_dt(report.now), _dt(d.execution.clock()))  # records never go back in time
            key = (verdict.namespace, verdict.name)
            row = report.of(verdict.key)
            if verdict.gate == "hold":
                if row is not None:
                    row.decision = "; ".join(verdict.reasons)
                continue
            ctx = RunbookContext(cluster=d.execution.cluster, settings=d.execution.runbook_settings,
                                 clock=d.execution.clock, sleep=d.execution.sleep, incident_id=None, actor="autoscaler")
            with d.uow() as uow:
                spare = busy.get(key, {}) if verdict.replicas < verdict.current else {}
                action = record_decision(uow.session, verdict=verdict, bounds=bounds[key],
                                         reason=requests[key].reason, catalogue=d.execution.catalogue, ctx=ctx,
                                         now=now, busy_pods=spare)
                action_id, incident_id = action.id, action.incident_id
                uow.commit()
            entry = {"deployment": verdict.key, "action_id": action_id, "from": verdict.current,
                     "to": verdict.replicas, "gate": verdict.gate, "reasons": verdict.reasons}
            log.info("autoscale: %s %d → %d replicas (%s): %s", verdict.key, verdict.current, verdict.replicas,
                     requests[key].reason, "approved by policy" if verdict.gate == "auto" else "waits for a human",
                     extra={"action_id": action_id, "incident_id": incident_id})
            if verdict.gate == "auto":
                outcome = execute(d.uow, action_id=action_id, deps=d.execution, dry_run=d.dry_run)
                entry["status"] = outcome.status
                with d.uow() as uow:  # after the execution's own records, on the same clock
                    settle(uow.session, incident_id, _dt(d.execution.clock()))
                    uow.commit()
            else:
                entry["status"] = ActionStatus.AWAITING_APPROVAL.value
                self._ask(action_id)
            report.actions.append(entry)
            if row is not None:
                row.decision = f"action {action_id}: {verdict.current} → {verdict.replicas} ({entry['status']})"


    def _ask(self, action_id: int) -> None:
        if self.deps.ask_approval is None:
            return
        try:
            self.deps.ask_approval(action_id)
        except Exception:  # a channel being down never stops the cycle; the approval waits in the store
            log.exception("the notifier failed", extra={"action_id": action_id})


def after_decision(uow: Callable[[], UnitOfWork], deps: ExecutionDeps, *, incident_id: int,
                   decision: Mapping[str, Any] | None, dry_run: bool, now: datetime) -> str | None:
    """An autoscale incident's answer to a decision, an expiry or an execution elsewhere (what the agent does
    for other incidents): an approved action runs, and the incident settles. None when it is not one."""
    with uow() as unit:
        if not is_autoscale_incident(unit.session, incident_id):
            return None
        incident = unit.session.get(Incident, incident_id)
        approved = [a.id for a in incident.actions if a.status == ActionStatus.APPROVED] if incident else []
    outcome = "nothing to run"
    for action_id in approved:
        result = execute(uow, action_id=action_id, deps=deps, dry_run=dry_run)
        outcome = f"action {action_id}: {result.status}"
    with uow() as unit:
        settle(unit.session, incident_id, max(now, _dt(deps.clock())))
        unit.commit()
    return outcome


def _arrivals(before: DemandSample, after: DemandSample, key: DeploymentKey) -> int:
    """Served since `before` (a counter reset counts from zero) plus the change in flight."""
    done_before, done_after = before.completed.get(key, 0.0), after.completed.get(key, 0.0)
    served = done_after - done_before if done_after >= done_before else done_after
    change = after.in_flight.get(key, 0.0) - before.in_flight.get(key, 0.0)
    return max(0, round(served + change))


def _why(reading: DemandReading, desired: int) -> str:
    ahead = desired - reading.in_flight
    return (f"{reading.in_flight} requests in flight, {reading.arrivals} arrived since the last cycle; the plan "
            f"wants {desired} replicas" + (f" ({ahead} ready ahead of demand)" if ahead > 0 else ""))


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
