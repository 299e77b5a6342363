"""The Slack notifier: approval prompts, their updates and progress replies go through an outbox in the store,
so a Slack outage delays them instead of losing them. Each notifier call queues its post and then delivers
what is due; the periodic expiry task retries the rest with back-off. Messages are rendered from the store at
send time, so a post delivered late shows the current state of the action."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.slack import (
    ApprovalPrompt,
    Decision,
    MessageRef,
    SlackError,
    SlackPort,
    SlackUnavailable,
    approval_blocks,
    progress_text,
    summary_text,
)
from domain import ActionStatus, Budget
from domain import clock as gpuops_clock
from gpuops.config import Settings
from gpuops.store.models import Action, FindingRecord, SlackMessage, SlackOutbox
from gpuops.store.uow import UnitOfWork

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
MAX_REFUSED_ATTEMPTS = 5  # Slack refusing a post (bad channel, bad token) is retried a few times, then dropped
EVIDENCE_LIMIT = 8


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0))
    return max(delay, retry_after_s or 0.0)


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def evidence_of(session: Session, incident_id: int) -> list[tuple[str, str]]:
    """The latest finding's numbers (evidence values, score, predicted failure time), as (label, value) pairs."""
    finding = session.scalars(select(FindingRecord).where(FindingRecord.incident_id == incident_id)
                              .order_by(FindingRecord.ts.desc(), FindingRecord.id.desc()).limit(1)).first()
    if finding is None:
        return []
    what = f"{finding.kind} by {finding.detector}, score {_number(finding.score)}"
    pairs: list[tuple[str, str]] = [("Finding", what)]
    for key, value in finding.evidence.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        pairs.append((key.replace("_", " "), _number(value)))
    if finding.predicted_failure_at is not None:
        pairs.append(("Predicted failure", finding.predicted_failure_at.isoformat(timespec="minutes")))
    return pairs[:EVIDENCE_LIMIT]


def budget_of(verdict: dict[str, Any]) -> list[tuple[str, str]]:
    """Budget left after the action, from the policy verdict stored with it, in the dashboard's words."""
    budget = Budget.from_json(verdict.get("budget"))
    return [] if budget is None else budget.describe()


def prompt_for(session: Session, action: Action, *, dashboard_url: str | None,
               slack_ids: Mapping[str, str] | None = None) -> ApprovalPrompt:
    """What the approval message shows for `action`, read from the store. A decision made in Slack names its
    person by their linked Slack id (`slack_ids`: person -> id), so Slack shows it as a mention."""
    linked = slack_ids or {}
    incident = action.incident
    if incident.scope == "fleet":
        location = f"fleet, {len(incident.details.get('hosts', []))} nodes"
    elif incident.hostname is None and incident.details.get("deployment"):  # the autoscaler's incidents
        location = f"deployment {incident.details['deployment']}"
    else:
        location = incident.hostname or "?"
        if incident.gpu is not None:
            location += f" GPU {incident.gpu}"
    decisions = [Decision(who=linked.get(a.approver, a.approver) if a.channel == "slack" else a.approver,
                          decision=a.decision, at=a.decided_at.isoformat(timespec="seconds"),
                          channel=a.channel, reason=a.reason)
                 for a in action.approvals if a.plan_hash == action.plan_hash]
    diff = action.diff or {}
    return ApprovalPrompt(
        action_id=action.id, plan_hash=action.plan_hash, incident_id=incident.id, title=incident.title,
        severity=incident.severity, summary=incident.summary, location=location,
        evidence=evidence_of(session, incident.id), runbook=action.runbook, targets=[str(t) for t in action.targets],
        params=dict(action.parameters), risk=action.risk, rationale=action.rationale,
        pods_evicted=len(diff.get("pods_affected", [])), gpus_affected=int(diff.get("gpus_affected", 0)),
        gpu_hours_at_risk=float(diff.get("gpu_hours_at_risk", 0.0)), budget=budget_of(action.verdict or {}),
        status=action.status, approvals_required=max(action.approvals_required, 1), decisions=decisions,
        dashboard_url=f"{dashboard_url.rstrip('/')}/incidents/{incident.id}" if dashboard_url else None,
        expired_at=action.updated_at.isoformat(timespec="seconds") if action.status == ActionStatus.EXPIRED
        else None)


class _NotYetPosted(Exception):
    """An update or reply whose prompt has not reached Slack yet: it waits behind the post."""


class SlackNotifier:
    """Notifier over a SlackPort (the real Web API client unless one is given), with an outbox in the store."""

    def __init__(self, *, uow: Callable[[], UnitOfWork], settings: Settings, port: SlackPort | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._uow = uow
        self._settings = settings
        self._slack_ids = {name: slack_id for slack_id, name in reversed(settings.slack_users)}  # first link wins
        self._port = port
        self._clock = clock or gpuops_clock.now
        self._delivering = threading.Lock()
        self._quiet_until: datetime | None = None  # Slack was unreachable: notifications queue without trying

    @property
    def port(self) -> SlackPort:
        """The Web API client, built on first use (building it contacts nothing)."""
        if self._port is None:
            from connectors.slack import WebApiSlack

            s = self._settings
            assert s.slack_bot_token is not None
            self._port = WebApiSlack(token=s.slack_bot_token.get_secret_value(), base_url=s.slack_api_url,
                                     timeout_s=s.slack_timeout_seconds)
        return self._port

    # -- the Notifier port

    def approval_requested(self, action_id: int) -> None:
        self._queue(action_id, "post")
        self._deliver_soon()

    def decision_recorded(self, action_id: int) -> None:
        self._queue(action_id, "update")
        self._deliver_soon()

    def progress(self, action_id: int, status: str, detail: str) -> None:
        if status == ActionStatus.EXPIRED:
            self._queue(action_id, "update")
            self._queue(action_id, "reply", text="<!here> " + progress_text(status, detail), broadcast=True)
        else:
            self._queue(action_id, "reply", text=progress_text(status, detail))
        self._deliver_soon()

    def retry_pending(self) -> int:
        """Deliver every due post in order; stop at the first sign that Slack is unreachable. Returns how many
        went out. Never raises for Slack's sake: what did not go out stays queued."""
        with self._delivering:
            return self._deliver_due()

    def _deliver_soon(self) -> None:
        # Right after Slack failed, a notification only queues: a dashboard or Slack request that caused it
        # should not wait for another timeout. The periodic retry_pending tries again.
        if self._quiet_until is not None and self._clock() < self._quiet_until:
            return
        self.retry_pending()

    # -- the outbox

    def _queue(self, action_id: int, kind: str, *, text: str = "", broadcast: bool = False) -> None:
        with self._uow() as uow:
            session = uow.session
            message = session.get(SlackMessage, action_id)
            if kind == "post":
                if message is not None:
                    return  # already prompted (or queued): asking twice posts once
                if session.get(Action, action_id) is None:
                    return
                channel = self._settings.slack_channel
                assert channel is not None
                session.add(SlackMessage(action_id=action_id, channel=channel))
            elif message is None:
                return  # never prompted in Slack (auto-approved, or before Slack was configured)
            elif kind == "update" and session.scalars(select(SlackOutbox.id).where(
                    SlackOutbox.action_id == action_id, SlackOutbox.kind == "update",
                    SlackOutbox.status == "pending")).first() is not None:
                return  # an update renders the state at send time: one pending is enough
            session.add(SlackOutbox(action_id=action_id, kind=kind, text=text, broadcast=broadcast,
                                    next_attempt_at=self._clock(), created_at=self._clock()))
            uow.commit()

    def _deliver_due(self) -> int:
        now = self._clock()
        with self._uow() as uow:
            due = list(uow.session.execute(
                select(SlackOutbox.id, SlackOutbox.action_id)
                .where(SlackOutbox.status == "pending", SlackOutbox.next_attempt_at <= now)
                .order_by(SlackOutbox.id).limit(200)))
        blocked: set[int] = set()
        sent = 0
        for row_id, action_id in due:
            if action_id in blocked:
                continue
            delivered, slack_down = self._deliver_one(row_id, now)
            sent += delivered
            if delivered:
                self._quiet_until = None
            else:
                blocked.add(action_id)
            if slack_down:
                self._quiet_until = now + timedelta(seconds=BACKOFF_BASE_S)
                break
        return sent

    def _deliver_one(self, row_id: int, now: datetime) -> tuple[bool, bool]:
        """(sent, Slack unreachable) for one outbox row, in its own transaction."""
        with self._uow() as uow:
            session = uow.session
            row = session.execute(select(SlackOutbox).where(SlackOutbox.id == row_id, SlackOutbox.status == "pending")
                                  .with_for_update(skip_locked=True)).scalar_one_or_none()
            if row is None:
                return False, False  # another worker has it
            try:
                self._send(session, row)
            except _NotYetPosted:
                return False, False
            except SlackUnavailable as exc:
                row.attempts += 1
                row.last_error = str(exc)
                row.next_attempt_at = now + timedelta(seconds=backoff_s(row.attempts, exc.retry_after_s))
                uow.commit()
                log.warning("Slack unreachable; the post stays queued", extra={"action_id": row.action_id,
                                                                               "attempts": row.attempts})
                return False, True
            except SlackError as exc:
                row.attempts += 1
                row.last_error = str(exc)
                row.next_attempt_at = now + timedelta(seconds=backoff_s(row.attempts))
                if row.attempts >= MAX_REFUSED_ATTEMPTS:
                    row.status = "failed"
                uow.commit()
                log.error("Slack refused a post", extra={"action_id": row.action_id, "error": str(exc)})
                return False, False
            row.status, row.sent_at, row.attempts = "sent", now, row.attempts + 1
            uow.commit()
            return True, False

    def _send(self, session: Session, row: SlackOutbox) -> None:
        message = session.get(SlackMessage, row.action_id)
        action = session.get(Action, row.action_id)
        if message is None or action is None:
            return
        if row.kind == "post":
            if message.ts is not None:
                return
            prompt = prompt_for(session, action, dashboard_url=self._settings.dashboard_url,
                                slack_ids=self._slack_ids)
            ref = self.port.post_message(channel=message.channel, text=summary_text(prompt),
                                         blocks=approval_blocks(prompt))
            message.channel, message.ts, message.posted_at = ref.channel, ref.ts, self._clock()
            return
        if message.ts is None:
            raise _NotYetPosted()
        ref = MessageRef(message.channel, message.ts)
        if row.kind == "update":
            prompt = prompt_for(session, action, dashboard_url=self._settings.dashboard_url,
                                slack_ids=self._slack_ids)
            self.port.update_message(ref, text=summary_text(prompt), blocks=approval_blocks(prompt))
        else:
            self.port.post_message(channel=ref.channel, text=row.text, thread_ts=ref.ts, broadcast=row.broadcast)
