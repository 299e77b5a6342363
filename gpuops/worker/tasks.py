"""The tasks: thin wrappers that validate their payload, call one service function with the container's
ports, and enqueue the next step after the transaction that made it necessary has committed."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import or_, select

from gpuops import decisions
from gpuops.detection import run_cycle
from gpuops.execution.holds import due_holds
from gpuops.execution.service import deps_from, execute, plan_of
from gpuops.incidents.lifecycle import can_transition
from gpuops.store.audit import append_event
from gpuops.store.models import Action, Incident
from gpuops.worker import agent_bridge
from gpuops.worker.base import GpuopsTask
from gpuops.worker.payloads import ActionPayload, AgentPayload, CyclePayload, IncidentPayload, NoPayload
from runbooks import RunbookContext

log = logging.getLogger(__name__)

DETECT = "gpuops.detect"
INCIDENT_UPDATE = "gpuops.incident_update"
AGENT_STEP = "gpuops.agent_step"
EXECUTE = "gpuops.execute_action"
VERIFY = "gpuops.verify_action"
SWEEP = "gpuops.sweep_actions"
EXPIRE = "gpuops.expire_approvals"
RELEASE = "gpuops.release_holds"

CYCLES_QUEUE = "gpuops.cycles"
INCIDENTS_QUEUE = "gpuops.incidents"
ACTIONS_QUEUE = "gpuops.actions"
QUEUES = (CYCLES_QUEUE, INCIDENTS_QUEUE, ACTIONS_QUEUE)
ROUTES = {DETECT: CYCLES_QUEUE, INCIDENT_UPDATE: INCIDENTS_QUEUE, AGENT_STEP: INCIDENTS_QUEUE,
          EXPIRE: INCIDENTS_QUEUE, RELEASE: INCIDENTS_QUEUE, EXECUTE: ACTIONS_QUEUE, VERIFY: ACTIONS_QUEUE,
          SWEEP: ACTIONS_QUEUE}


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def _now() -> datetime:
    return datetime.now(tz=UTC)


def register(app: Celery) -> None:
    """Define the tasks on `app` (each app gets its own, so tests and processes never share state)."""
    from gpuops.worker.app import HARD_MARGIN_S, runtime_of, soft_limits

    settings = runtime_of(app).settings
    limits = soft_limits(settings)

    def task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        decorator: Callable[[Callable[..., Any]], Any] = app.task(
            name=name, base=GpuopsTask, bind=True, shared=False, soft_time_limit=limits[name],
            time_limit=limits[name] + HARD_MARGIN_S, max_retries=settings.task_max_retries, **options)
        return decorator

    @task(DETECT)
    def detect(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """One detection cycle of one shard; new or reopened incidents get an update task each."""
        p = CyclePayload.model_validate(payload)
        runtime = runtime_of(self.app)
        c, s = runtime.container, runtime.settings
        outcome = run_cycle(c.uow, telemetry=c.telemetry, end=p.end, step_s=s.step_seconds,
                            window_s=s.window_seconds, shard=p.shard, shards=p.shards,
                            new_cycle=c.new_detection_cycle)
        changed = sorted(set(outcome.incidents.opened + outcome.incidents.reopened)) if outcome.incidents else []
        for incident_id in changed:
            incident_update.apply_async(kwargs={"incident_id": incident_id})
        return {"shard": outcome.shard, "ran": outcome.ran, "end": p.end, "findings": len(outcome.findings),
                "incidents": changed, "reason": outcome.reason}

    @task(INCIDENT_UPDATE)
    def incident_update(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """An incident opened or reopened: hand it to the agent if it still needs one."""
        p = IncidentPayload.model_validate(payload)
        with runtime_of(self.app).container.uow() as uow:
            incident = uow.session.get(Incident, p.incident_id)
            status = incident.status if incident is not None else None
        needs_agent = status is not None and can_transition(status, "investigating")
        if needs_agent:
            agent_step.apply_async(kwargs={"incident_id": p.incident_id})
        return {"incident_id": p.incident_id, "status": status, "agent": needs_agent}

    @task(AGENT_STEP)
    def agent_step(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        p = AgentPayload.model_validate(payload)
        decision = dict(p.decision) if p.decision else None
        note = agent_bridge.advance_incident(runtime_of(self.app).container, p.incident_id, decision)
        return {"incident_id": p.incident_id, "note": note}

    @task(EXECUTE)
    def execute_action(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """Run an approved action. The store's claim makes a redelivered or duplicate message harmless."""
        p = ActionPayload.model_validate(payload)
        runtime = runtime_of(self.app)
        c = runtime.container
        deps = deps_from(c, worker=worker_name(), claim_ttl_s=runtime.settings.claim_ttl_seconds)
        outcome = execute(c.uow, action_id=p.action_id, deps=deps, dry_run=runtime.settings.dry_run)
        if outcome.status in ("succeeded", "failed", "rolled_back"):
            verify_action.apply_async(kwargs={"action_id": p.action_id}, countdown=runtime.settings.cycle_seconds)
        return {"action_id": outcome.action_id, "status": outcome.status, "verified": outcome.verified,
                "detail": outcome.detail}

    @task(VERIFY)
    def verify_action(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """Check, one cycle later, that a finished action's effect still holds; record what was seen."""
        p = ActionPayload.model_validate(payload)
        c = runtime_of(self.app).container
        with c.uow() as uow:
            action = uow.session.get(Action, p.action_id)
            if action is None:
                raise ValueError(f"action {p.action_id} does not exist")
            plan, incident_id, status = plan_of(action), action.incident_id, action.status
        deps = deps_from(c, worker=worker_name())
        ctx = RunbookContext(cluster=deps.cluster, settings=deps.runbook_settings, clock=deps.clock,
                             sleep=deps.sleep, incident_id=incident_id, actor="verifier")
        result = c.catalogue.verify(plan, ctx)
        with c.uow() as uow:
            append_event(uow.session, actor="verifier", kind="action.reverified", incident_id=incident_id,
                         action_id=p.action_id, data={"ok": result.ok, "detail": result.detail,
                                                      "status": status}, ts=_now())
            uow.commit()
        try:
            c.notifier.progress(p.action_id, "verified" if result.ok else "failed", f"re-check: {result.detail}")
        except Exception:  # a channel being down never fails the verification
            log.exception("the notifier failed", extra={"action_id": p.action_id})
        return {"action_id": p.action_id, "holds": result.ok, "detail": result.detail}

    @task(SWEEP)
    def sweep_actions(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """Re-enqueue approved actions and actions whose claim expired (a lost message, a dead worker)."""
        NoPayload.model_validate(payload)
        now = _now()
        with runtime_of(self.app).container.uow() as uow:
            stmt = select(Action.id).where(or_(
                Action.status == "approved",
                (Action.status.in_(("executing", "verifying")) & (Action.claim_expires_at <= now))))
            ids = list(uow.session.scalars(stmt))
        for action_id in ids:
            execute_action.apply_async(kwargs={"action_id": action_id})
        return {"enqueued": ids}

    @task(RELEASE)
    def release_holds(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """Resume the agent on incidents whose soak is over: every shard has examined the data up to the
        hold's end (or detection stalled, and the hold is released as stale)."""
        NoPayload.model_validate(payload)
        runtime = runtime_of(self.app)
        with runtime.container.uow() as uow:
            ids = due_holds(uow.session, shards=runtime.settings.shards, now=_now())
        for incident_id in ids:
            agent_step.apply_async(kwargs={"incident_id": incident_id, "decision": {"hold": "over"}})
        return {"resumed": ids}

    @task(EXPIRE)
    def expire_approvals(self: GpuopsTask, **payload: Any) -> dict[str, Any]:
        """Expire approvals that waited too long, tell the notifier, and retry its held-back posts."""
        NoPayload.model_validate(payload)
        expired = decisions.expire_approvals(runtime_of(self.app).container, now=_now())
        return {"expired": expired}
