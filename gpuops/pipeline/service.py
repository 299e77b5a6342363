"""The use cases the service runs, each with an injected clock and dispatcher: a detection cycle, an incident
that opened or changed, an agent step, a decision from any channel, the execution of an action the sweep
took over, its re-verification, a node's return to service after its probation, and the sweep. The Celery
tasks, the embedded daemon, `gpuops approve`, the dashboard, Slack and `gpuops eval` all call these; they
differ only by clock and dispatcher."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import exists, or_, select

from connectors.kubernetes.errors import ClusterNotConfigured
from domain import ActionStatus, ExecutionStatus, IncidentStatus
from gpuops.cost.recording import UsageSettings
from gpuops.decisions import RecordedDecision, record_decision
from gpuops.detection import CycleOutcome, LiveCycles, run_cycle
from gpuops.errors import ConfigError, GpuopsError, NotFound
from gpuops.execution.approvals import Approver, expire_pending
from gpuops.execution.holds import due_holds
from gpuops.execution.probation import ACTIVE as PROBATION_ACTIVE
from gpuops.execution.probation import FENCING, PROBATION, TICKETING, probation_of_action
from gpuops.execution.returns import NodeDiagnostics, ProbationOutcome, conclude, due_probations, examine
from gpuops.execution.service import ExecutionDeps, ExecutionOutcome, deps_from, execute, plan_of, runbook_context
from gpuops.incidents.alerts import AlertmanagerWebhook, AlertsOutcome, receive_alerts
from gpuops.incidents.evidence import EvidenceSources, keep_evidence
from gpuops.incidents.lifecycle import can_transition
from gpuops.pipeline.dispatch import Dispatcher
from gpuops.pipeline.steps import (
    PAYLOADS,
    ActionPayload,
    AgentPayload,
    CyclePayload,
    IncidentPayload,
    ProbationPayload,
    Step,
)
from gpuops.store.audit import append_event
from gpuops.store.models import Action, Incident, NodeProbation
from gpuops.wiring import Container

if TYPE_CHECKING:
    from agent.context import AgentContext
    from agent.planning import Planner
    from agent.runner import RunReport
    from gpuops.autoscale.cycle import Autoscaler, AutoscaleReport

log = logging.getLogger(__name__)

FINISHED_EXECUTION = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.ROLLED_BACK})
RESUMES_THREAD = FINISHED_EXECUTION | {ExecutionStatus.DRY_RUN, ExecutionStatus.REFUSED}
AgentContextFactory = Callable[[Container], "AgentContext"]


class InvalidStep(GpuopsError):
    """A step whose payload does not validate: a poison message, never retried."""


@dataclass(frozen=True)
class SweepOutcome:
    resumed: list[int] = field(default_factory=list)    # incidents whose soak is over
    expired: list[int] = field(default_factory=list)    # actions whose approval expired
    taken_over: list[int] = field(default_factory=list)  # actions whose claim expired or whose message was lost
    probations: list[int] = field(default_factory=list)  # node probations that are over or have news


@dataclass
class Pipeline:
    """The service's use cases over one container. `clock` and `sleep` are the time every part reads (the
    twin's in the evaluation); `agent_context` builds the agent's context (default: the wiring's, with
    `planner` instead of the configured one when given); `diagnostics` is a node agent's diagnostic that a
    node's probation also asks (none: telemetry and the cluster decide)."""

    container: Container
    dispatcher: Dispatcher
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    agent_context: AgentContextFactory | None = None
    planner: Planner | None = None
    worker: str = field(default_factory=socket.gethostname)
    diagnostics: NodeDiagnostics | None = None
    autoscaler: Autoscaler | None = None  # built on first use from the environment (gpuops.autoscale.wiring)
    _ctx: AgentContext | None = None
    _live: LiveCycles = field(default_factory=dict)  # this process's detectors, between its cycles

    # -- the steps, as a dispatcher or a task runs them ---------------------------------------------------

    def run(self, step: Step, payload: Mapping[str, Any]) -> Any:
        """Validate `payload` for `step` and run its use case (what every dispatcher and task calls)."""
        try:
            p = PAYLOADS[Step(step)].model_validate(dict(payload))
        except (ValidationError, ValueError) as exc:
            raise InvalidStep(f"{step}: {exc}") from exc
        if isinstance(p, CyclePayload):
            return self.detection_cycle(shard=p.shard, shards=p.shards, end=p.end)
        if isinstance(p, IncidentPayload):
            return self.incident_changed(p.incident_id)
        if isinstance(p, AgentPayload):
            return self.agent_step(p.incident_id, dict(p.decision) if p.decision else None)
        if isinstance(p, ProbationPayload):
            return self.return_node(p.probation_id)
        if isinstance(p, ActionPayload):
            return self.execute_action(p.action_id) if step == Step.EXECUTE else self.verify_action(p.action_id)
        if step == Step.AUTOSCALE:
            return self.autoscale()
        return self.sweep()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    @property
    def deps(self) -> ExecutionDeps:
        c, s = self.container, self.container.settings
        return deps_from(c, clock=self.clock, sleep=self.sleep, worker=self.worker, claim_ttl_s=s.claim_ttl_seconds)

    # -- detection ----------------------------------------------------------------------------------------

    def detection_cycle(self, *, shard: int, shards: int, end: float) -> CycleOutcome:
        """One detection cycle of one shard; every incident it opened or reopened is handed on."""
        c, s = self.container, self.container.settings
        outcome = run_cycle(c.uow, telemetry=c.telemetry, end=end, step_s=s.step_seconds, window_s=s.window_seconds,
                            shard=shard, shards=shards, new_cycle=c.new_detection_cycle, live=self._live,
                            usage=UsageSettings(threshold_percent=s.idle_utilisation_percent, step_s=s.step_seconds,
                                                max_gap_s=3 * s.step_seconds))
        changed = sorted(set(outcome.incidents.opened + outcome.incidents.reopened)) if outcome.incidents else []
        for incident_id in changed:
            self.dispatcher.dispatch(Step.INCIDENT_CHANGED, {"incident_id": incident_id})
        return outcome

    def alerts_received(self, webhook: AlertmanagerWebhook) -> AlertsOutcome:
        """Alertmanager's webhook: its alerts become findings and incidents (gpuops.incidents.alerts); every
        incident an alert opened or reopened is handed on, like a detection cycle's."""
        with self.container.uow() as uow:
            outcome = receive_alerts(uow.session, webhook, now=self.now())
            uow.commit()
        for incident_id in sorted(set(outcome.opened)):
            self.dispatcher.dispatch(Step.INCIDENT_CHANGED, {"incident_id": incident_id})
        log.info("alerts received", extra={"alerts": len(webhook.alerts), **outcome.as_dict()})
        return outcome

    def incident_changed(self, incident_id: int) -> bool:
        """An incident opened or reopened: hand it to the agent if it still needs one."""
        with self.container.uow() as uow:
            incident = uow.session.get(Incident, incident_id)
            needs_agent = incident is not None and can_transition(incident.status, IncidentStatus.INVESTIGATING)
        self.keep_evidence(incident_id)
        if needs_agent:
            self.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id})
        return needs_agent

    def keep_evidence(self, incident_id: int) -> list[str]:
        """Snapshot the incident's telemetry and workload at every moment that lacks one (its opening, each
        executed action); evidence that cannot be taken never stops the incident."""
        c = self.container
        try:
            telemetry = c.telemetry
        except ConfigError:
            telemetry = None
        sources = EvidenceSources(telemetry=telemetry, cluster=c.cluster if c.cluster_configured else None,
                                  runbook_settings=c.runbook_settings, step_s=c.settings.step_seconds)
        try:
            with c.uow() as uow:
                taken = keep_evidence(uow.session, incident_id=incident_id, sources=sources, now=self.now())
                uow.commit()
        except Exception:
            log.exception("the incident's evidence could not be kept", extra={"incident_id": incident_id})
            return []
        return taken

    # -- autoscaling ----------------------------------------------------------------------------------------

    def autoscale(self) -> AutoscaleReport:
        """One autoscaling cycle at this pipeline's time: plan, publish, and scale what gpuops owns."""
        if self.autoscaler is None:
            from gpuops.autoscale.wiring import autoscaler_for

            self.autoscaler = autoscaler_for(self.container, self.deps)
        return self.autoscaler.run(self.clock())

    # -- the agent ----------------------------------------------------------------------------------------

    def context(self) -> AgentContext:
        """The agent's context, built on first use (the graph's libraries load only then), on this pipeline's
        clock and execution dependencies."""
        if self._ctx is None:
            from gpuops.agent_wiring import ExecutionActions, context_from_container

            ctx = (self.agent_context or context_from_container)(self.container)
            if self.agent_context is None:
                s = self.container.settings
                ctx = replace(ctx, actions=ExecutionActions(self.container.uow, self.deps, dry_run=s.dry_run,
                                                            shards=s.shards),
                              clock=self.now)
            if self.planner is not None:
                ctx = replace(ctx, planner=self.planner)
            self._ctx = ctx
        return self._ctx

    def agent_step(self, incident_id: int, decision: dict[str, Any] | None = None) -> str:
        """Run an incident's thread as far as it goes now (to a soak, an approval, another executor, or the
        end), or resume it after a decision, a soak or an execution; then tell the notifier."""
        from gpuops.agent_wiring import resume_incident, start_incident  # the graph's libraries load here
        from gpuops.autoscale.cycle import after_decision
        from gpuops.autoscale.records import is_autoscale_incident

        with self.container.uow() as uow:
            autoscale = is_autoscale_incident(uow.session, incident_id)
        # Only the autoscaler's incidents need the container's execution dependencies here (they connect to the
        # cluster): the agent's own context (a factory's, in `gpuops approve --context-factory`) brings its own.
        answered = after_decision(self.container.uow, self.deps, incident_id=incident_id, decision=decision,
                                  dry_run=self.container.settings.dry_run, now=self.now()) if autoscale else None
        if answered is not None:  # the autoscaler's incidents have no agent thread
            return answered
        try:
            ctx = self.context()
            report = (resume_incident(self.container, incident_id, decision, ctx) if decision
                      else start_incident(self.container, incident_id, ctx))
        except ClusterNotConfigured as exc:  # detection-only installs: the incident waits for a human
            log.warning("no cluster configured: the agent does not plan; the incident waits for a human",
                        extra={"incident_id": incident_id, "error": str(exc)})
            return f"not planned: {exc}"
        log.info("agent step", extra={"incident_id": incident_id, "planner": report.planner,
                                      "outcome": report.outcome or _pause(report)})
        self.keep_evidence(incident_id)
        self._notify(report, decision)
        return describe(report)

    def _notify(self, report: RunReport, decision: dict[str, Any] | None) -> None:
        notifier = self.container.notifier
        try:
            if report.waiting_for:
                notifier.approval_requested(int(report.waiting_for["action_id"]))
            if decision:
                for execution in report.executions:
                    notifier.progress(int(execution["action_id"]), str(execution.get("status", "")),
                                      str(execution.get("detail", "")))
        except Exception:  # a channel being down never stops the incident
            log.exception("the notifier failed", extra={"incident_id": report.incident_id})

    # -- decisions ----------------------------------------------------------------------------------------

    def decide(self, *, action_id: int, approver: Approver, decision: str, plan_hash: str | None,
               reason: str) -> RecordedDecision:
        """A human decision from any channel: recorded (a refusal is audited and returned in the outcome), and
        once the action has left the approval wait (approved by enough people, or rejected) its incident's
        thread is resumed by the dispatcher, off the caller's thread."""
        recorded = record_decision(self.container, action_id=action_id, approver=approver, decision=decision,
                                   plan_hash=plan_hash, reason=reason, now=self.now())
        outcome = recorded.outcome
        if outcome.refusal is None and not outcome.duplicate and outcome.status != ActionStatus.AWAITING_APPROVAL:
            with self.container.uow() as uow:
                probation_id = probation_of_action(uow.session, action_id)
            if probation_id is not None:  # a node's return or ticket: its probation moves on, not an agent thread
                self.dispatcher.dispatch(Step.RETURN_NODE, {"probation_id": probation_id})
            else:
                self.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": recorded.incident_id, "decision": {
                    "action_id": action_id, "decision": decision, "by": approver.identity}})
        return recorded

    # -- execution the sweep took over ----------------------------------------------------------------------

    def execute_action(self, action_id: int) -> ExecutionOutcome:
        """Run an action the sweep took over (its claim expired, or its message was lost). The store's claim
        makes a duplicate harmless; when it finishes, the incident's thread (waiting for it) is resumed and a
        re-verification is due one cycle later."""
        outcome = execute(self.container.uow, action_id=action_id, deps=self.deps,
                          dry_run=self.container.settings.dry_run)
        if outcome.status in FINISHED_EXECUTION:
            self.dispatcher.dispatch(Step.VERIFY, {"action_id": action_id},
                                     delay_s=self.container.settings.cycle_seconds)
        if outcome.status in RESUMES_THREAD:
            with self.container.uow() as uow:
                action = uow.session.get(Action, action_id)
                incident_id = action.incident_id if action is not None else None
            if incident_id is not None:
                self.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id,
                                                           "decision": {"executed": action_id}})
        return outcome

    def verify_action(self, action_id: int) -> bool:
        """Check, a cycle later, that a finished action's effect still holds; record what was seen."""
        c = self.container
        with c.uow() as uow:
            action = uow.session.get(Action, action_id)
            if action is None:
                raise NotFound(f"action {action_id} does not exist")
            plan, incident_id, status = plan_of(action), action.incident_id, action.status
        deps = self.deps
        ctx = runbook_context(deps, incident_id, "verifier", action_id=action_id)
        result = c.catalogue.verify(plan, ctx)
        with c.uow() as uow:
            append_event(uow.session, actor="verifier", kind="action.reverified", incident_id=incident_id,
                         action_id=action_id, data={"ok": result.ok, "detail": result.detail, "status": status},
                         ts=self.now())
            uow.commit()
        try:
            c.notifier.progress(action_id, "verified" if result.ok else ExecutionStatus.FAILED,
                               f"re-check: {result.detail}")
        except Exception:  # a channel being down never fails the verification
            log.exception("the notifier failed", extra={"action_id": action_id})
        return result.ok

    # -- a node's return to service -----------------------------------------------------------------------

    def return_node(self, probation_id: int) -> ProbationOutcome:
        """Decide a node's probation (return it, or keep it out with a ticket), run the fence, uncordon or ticket
        action once policy or a human approved it, and record how it ended on the incident. A node that returns
        without a GPU has that GPU fenced off first where the device plugin still offers it, and its ticket opened:
        once each has run, the node is examined again at once, so its uncordon is proposed in the same step (not
        sweeps later)."""
        examined, outcome = self._decide_return(probation_id)
        for _ in range(2):  # fence, then ticket, then uncordon
            if examined.status not in (FENCING, TICKETING) or outcome.status != PROBATION:
                break
            examined, outcome = self._decide_return(probation_id)
        return outcome

    def _decide_return(self, probation_id: int) -> tuple[ProbationOutcome, ProbationOutcome]:
        """One examination and the action it proposed: how the examination left the probation, and how it
        stands once that action ran."""
        c = self.container
        with c.uow() as uow:
            diagnostics = self.diagnostics if self.diagnostics is not None else c.node_diagnostics(self.clock)
            examined = examine(uow, probation_id=probation_id, deps=self.deps, shards=c.settings.shards,
                               diagnostics=diagnostics)
            uow.commit()
        if examined.action_id is None:
            return examined, examined
        if examined.action_status == ActionStatus.AWAITING_APPROVAL and examined.proposed:
            self._ask_approval(examined.action_id)
        elif examined.action_status == ActionStatus.APPROVED or examined.action_status in ActionStatus.RUNNING:
            execute(c.uow, action_id=examined.action_id, deps=self.deps, dry_run=c.settings.dry_run)
        with c.uow() as uow:
            outcome = conclude(uow, probation_id=probation_id, now=self.now())
            uow.commit()
        return examined, outcome

    def _ask_approval(self, action_id: int) -> None:
        try:
            self.container.notifier.approval_requested(action_id)
        except Exception:  # a channel being down never stops the probation; the approval waits in the store
            log.exception("the notifier failed", extra={"action_id": action_id})

    # -- the sweep ----------------------------------------------------------------------------------------

    def sweep(self) -> SweepOutcome:
        """What time alone moves on: incidents whose soak is over are resumed; approvals that waited too long
        expire (their threads end, escalated); actions whose executor died (claim expired) or whose message
        was lost (approved, unclaimed for longer than an agent step may run) are executed; node probations that
        are over (or see a new error) are decided. A fresh approval is never taken: the incident's own thread
        executes it."""
        self._send_incident_events()
        c, s = self.container, self.container.settings
        now = self.now()
        with c.uow() as uow:
            if not _anything_waits(uow.session):  # the common case, in one query
                self._after_expiry([])
                return SweepOutcome()
            resumed = due_holds(uow.session, shards=s.shards, now=now)
            expired = expire_pending(uow.session, now=now, ttl_s=c.policy.approval_ttl_s)
            expired_incidents = {action_id: incident_id for action_id, incident_id in uow.session.execute(
                select(Action.id, Action.incident_id).where(Action.id.in_(expired)))}
            uow.commit()
            taken = _taken_over(uow.session, now, lost_after_s=s.task_time_limit_seconds)
            probations = due_probations(uow.session, shards=s.shards, now=now)
        for incident_id in resumed:
            self.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id, "decision": {"hold": "over"}})
        for action_id, incident_id in sorted(expired_incidents.items()):
            self.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id, "decision": {
                "action_id": action_id, "decision": "expired"}})
        for action_id in taken:
            self.dispatcher.dispatch(Step.EXECUTE, {"action_id": action_id})
        for probation_id in probations:
            self.dispatcher.dispatch(Step.RETURN_NODE, {"probation_id": probation_id})
        self._after_expiry(expired)
        return SweepOutcome(resumed, expired, taken, probations)

    def _send_incident_events(self) -> None:
        """Tell PagerDuty and the webhook what changed in the incidents since the last sweep (their outbox)."""
        try:
            self.container.incident_notifications.run()
        except Exception:  # a channel or the store failing never stops the sweep; the next sweep reconciles again
            log.exception("incident notifications failed")

    def _after_expiry(self, expired: list[int]) -> None:
        ttl_s = self.container.policy.approval_ttl_s
        notifier = self.container.notifier
        try:
            for action_id in expired:
                notifier.progress(action_id, ActionStatus.EXPIRED,
                                  f"no decision within {ttl_s / 60:.0f} min; the incident is escalated to a human")
            notifier.retry_pending()
        except Exception:  # a channel being down never stops the sweep
            log.exception("the notifier failed after expiring approvals", extra={"expired": expired})


def _anything_waits(session: Any) -> bool:
    """Whether any incident holds a soak, any action waits for a decision, an executor or its end, or any node
    waits on probation."""
    held = exists().where(Incident.held_until.is_not(None), Incident.status.in_(IncidentStatus.ACTIVE))
    pending = exists().where(Action.status.in_(
        (ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED, *ActionStatus.RUNNING)))
    probation = exists().where(NodeProbation.status.in_(PROBATION_ACTIVE))
    return bool(session.scalar(select(or_(held, pending, probation))))


def _taken_over(session: Any, now: datetime, *, lost_after_s: float) -> list[int]:
    """Actions the sweep executes: claimed by an executor whose claim expired, or approved and left unclaimed
    for longer than `lost_after_s` (the step that would have run it is gone) and not waiting for the budget. A
    probation's own actions are left to its return step, which the sweep dispatches for them."""
    stale = session.scalars(select(Action).where(
        Action.status.in_(ActionStatus.RUNNING), Action.claim_expires_at <= now)).all()
    # an approved action waiting for the budget has a held incident, whose thread the hold's sweep resumes
    lost = [a for a in session.scalars(select(Action).where(Action.status == ActionStatus.APPROVED))
            if _approved_at(a) <= now - timedelta(seconds=lost_after_s) and not _held(a.incident, now)]
    return sorted(a.id for a in (*stale, *lost) if probation_of_action(session, a.id) is None)


def _held(incident: Incident, now: datetime) -> bool:
    until = incident.held_until
    return until is not None and (until if until.tzinfo else until.replace(tzinfo=UTC)) > now


def _approved_at(action: Action) -> datetime:
    """When the action became approved: its last approval, or its proposal when policy approved it."""
    times = [a.decided_at for a in action.approvals if a.decision == "approve"]
    latest = max(times, default=action.created_at)
    return latest if latest.tzinfo else latest.replace(tzinfo=UTC)


def _pause(report: RunReport) -> str:
    return "held" if report.held else "executing elsewhere" if report.executing else "waiting"


def describe(report: RunReport) -> str:
    """One line on where an incident's thread stands after a step."""
    if report.waiting_for:
        return f"waiting for a decision on action {report.waiting_for['action_id']}"
    if report.held:
        return f"held: {report.held['runbook']} waits until {report.held['hold_until']}"
    if report.executing:
        return f"waiting while action {report.executing['action_id']} runs elsewhere"
    return f"{report.outcome}: {report.reason}".strip(": ")


def threaded_pipeline(container: Container) -> Pipeline:
    """The pipeline of a process that takes decisions but runs no scheduler (the API): its steps go to the
    broker, or without one run on a thread of this process."""
    from gpuops.pipeline.dispatch import BrokerDispatcher, ThreadedDispatcher

    s = container.settings
    if s.broker_url is not None:
        return Pipeline(container, BrokerDispatcher(s.broker_url))
    dispatcher = ThreadedDispatcher(time.time)
    pipeline = Pipeline(container, dispatcher)
    dispatcher.bind(pipeline.run)
    return pipeline
