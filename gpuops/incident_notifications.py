"""Incident events to PagerDuty and a webhook, reconciled from the store.

Each channel has a ledger row per incident saying what it has been told (triggered, escalated, acknowledged,
resolved). `reconcile` compares every incident that may need news with its ledger and queues only the
difference in the outbox, moving the ledger in the same transaction, so a crash queues nothing twice and loses
nothing. `deliver` sends the outbox in order per channel and incident: a later event never overtakes an earlier
one that waits for a retry. A channel that is down or rate-limits keeps its events pending with back-off; a
refusal (PagerDuty's 400) marks the event failed with the receiver's message. What a channel is told:

- trigger: an incident at or above GPUOPS_NOTIFY_MIN_SEVERITY becomes known (any escalated incident counts);
  again when it escalates after its first trigger, and when it reopens after a resolve;
- acknowledge: a person acknowledged it (each new acknowledgement once);
- resolve: it was resolved or suppressed (folded into a fleet incident) after a trigger.

An incident that opened and closed between two runs is never announced. Delivery is at least once: a crash
between a receiver's answer and the commit sends that event again, with the same PagerDuty dedup key and the
same webhook delivery id, which both receivers deduplicate on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from connectors.paging import ChannelRefused, ChannelUnavailable, EventChannel
from connectors.paging.pagerduty import SUMMARY_LIMIT
from domain import IncidentStatus
from domain import clock as gpuops_clock
from gpuops.config import Settings
from gpuops.store.models import Incident, NotificationLedger, NotificationOutbox
from gpuops.store.uow import UnitOfWork

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
BATCH = 500
_RANK = {"info": 0, "warning": 1, "critical": 2}
_PD_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0))
    return max(delay, retry_after_s or 0.0)


def dedup_key(installation: str, incident_id: int) -> str:
    """The incident's key outside gpuops (PagerDuty's dedup_key, the webhook's `dedup_key`)."""
    return f"{installation}-incident-{incident_id}"


@dataclass(frozen=True)
class Change:
    """One event an incident's state owes a channel."""

    event: str  # trigger | acknowledge | resolve
    reason: str  # opened | escalated | reopened | acknowledged | resolved | suppressed


@dataclass(frozen=True)
class RunOutcome:
    queued: int
    sent: int
    failed: int


def owed(incident: Incident, ledger: NotificationLedger | None, *, min_severity: str) -> list[Change]:
    """What `incident` owes a channel whose ledger says `ledger` (None: told nothing), in the order to send."""
    active = incident.status in IncidentStatus.ACTIVE
    escalated = incident.status == IncidentStatus.ESCALATED
    if ledger is None or not ledger.triggered:
        wanted = escalated or _RANK.get(incident.severity, 0) >= _RANK[min_severity]
        if not active or not wanted:
            return []
        changes = [Change("trigger", "escalated" if escalated else "opened")]
        if incident.acknowledged_at is not None:
            changes.append(Change("acknowledge", "acknowledged"))
        return changes
    if ledger.resolved:
        if not active:
            return []
        changes = [Change("trigger", "reopened")]
        if _newly_acknowledged(incident, ledger):
            changes.append(Change("acknowledge", "acknowledged"))
        return changes
    if not active:
        return [Change("resolve", "resolved" if incident.status == IncidentStatus.RESOLVED else "suppressed")]
    changes = []
    if escalated and not ledger.escalated:
        changes.append(Change("trigger", "escalated"))
    if _newly_acknowledged(incident, ledger):
        changes.append(Change("acknowledge", "acknowledged"))
    return changes


def _newly_acknowledged(incident: Incident, ledger: NotificationLedger) -> bool:
    return incident.acknowledged_at is not None and incident.acknowledged_at != ledger.acknowledged_at


def _told(ledger: NotificationLedger, incident: Incident, change: Change, now: datetime) -> None:
    if change.event == "trigger":
        if change.reason == "reopened":
            ledger.escalated = False
        ledger.triggered, ledger.resolved = True, False
        ledger.escalated = ledger.escalated or incident.status == IncidentStatus.ESCALATED
    elif change.event == "acknowledge":
        ledger.acknowledged_at = incident.acknowledged_at
    else:
        ledger.resolved = True
    ledger.updated_at = now


class IncidentNotifications:
    """The reconciler and the outbox's sender for the configured channels (none: every call is a no-op)."""

    def __init__(self, *, uow: Callable[[], UnitOfWork], settings: Settings, channels: Sequence[EventChannel],
                 clock: Callable[[], datetime] | None = None) -> None:
        self._uow = uow
        self._settings = settings
        self._channels = {channel.name: channel for channel in channels}
        self._clock = clock or gpuops_clock.now
        self._running = threading.Lock()

    @property
    def channels(self) -> list[str]:
        return sorted(self._channels)

    def run(self) -> RunOutcome:
        """Reconcile, then deliver what is due. Never raises for a channel's sake."""
        if not self._channels:
            return RunOutcome(0, 0, 0)
        with self._running:
            queued = self.reconcile()
            sent, failed = self.deliver()
        return RunOutcome(queued, sent, failed)

    # -- reconciling

    def reconcile(self) -> int:
        """Queue every event the store's incidents owe each channel; returns how many were queued."""
        return sum(self._reconcile_channel(name) for name in self.channels)

    def _reconcile_channel(self, channel: str) -> int:
        with self._uow() as uow:
            ledger = NotificationLedger
            joined = and_(ledger.incident_id == Incident.id, ledger.channel == channel)
            candidates = list(uow.session.scalars(
                select(Incident.id).outerjoin(ledger, joined).where(or_(
                    and_(ledger.incident_id.is_(None), Incident.status.in_(IncidentStatus.ACTIVE)),
                    and_(ledger.incident_id.is_not(None),
                         or_(ledger.resolved.is_(False), Incident.status.in_(IncidentStatus.ACTIVE)))))
                .order_by(Incident.id)))
        return sum(self._reconcile_incident(channel, incident_id) for incident_id in candidates)

    def _reconcile_incident(self, channel: str, incident_id: int) -> int:
        now = self._clock()
        try:
            with self._uow() as uow:
                session = uow.session
                ledger = session.execute(select(NotificationLedger).where(
                    NotificationLedger.channel == channel, NotificationLedger.incident_id == incident_id)
                    .with_for_update()).scalar_one_or_none()
                incident = session.get(Incident, incident_id)
                if incident is None:
                    return 0
                changes = owed(incident, ledger, min_severity=self._settings.notify_min_severity)
                if not changes:
                    return 0
                if ledger is None:
                    ledger = NotificationLedger(channel=channel, incident_id=incident_id, triggered=False,
                                                escalated=False, resolved=False, updated_at=now)
                    session.add(ledger)
                for change in changes:
                    body = self._render(channel, incident, change, now)
                    session.add(NotificationOutbox(channel=channel, incident_id=incident_id, event=change.event,
                                                   body=body, next_attempt_at=now, created_at=now))
                    _told(ledger, incident, change, now)
                uow.commit()
                return len(changes)
        except IntegrityError:  # another process created this ledger row first: it queued the same events
            return 0

    # -- rendering

    def _render(self, channel: str, incident: Incident, change: Change, now: datetime) -> dict[str, Any]:
        if channel == "pagerduty":
            return pagerduty_event(incident, change, settings=self._settings, now=now)
        return webhook_event(incident, change, settings=self._settings, now=now)

    # -- delivering

    def deliver(self) -> tuple[int, int]:
        """Send what is due, per channel in id order, each incident's events strictly in order; returns (sent,
        failed). A channel that is down is left alone until its next run."""
        sent = failed = 0
        for name in self.channels:
            s, f = self._deliver_channel(name)
            sent, failed = sent + s, failed + f
        return sent, failed

    def _deliver_channel(self, channel: str) -> tuple[int, int]:
        now = self._clock()
        with self._uow() as uow:
            pending = list(uow.session.execute(
                select(NotificationOutbox.id, NotificationOutbox.incident_id, NotificationOutbox.next_attempt_at)
                .where(NotificationOutbox.status == "pending", NotificationOutbox.channel == channel)
                .order_by(NotificationOutbox.id).limit(BATCH)))
        waiting: set[int] = set()  # incidents with an earlier event still pending: theirs wait behind it
        sent = failed = 0
        for row_id, incident_id, due_at in pending:
            if incident_id in waiting:
                continue
            waiting.add(incident_id)
            if due_at > now:
                continue
            outcome = self._deliver_one(channel, row_id, now)
            if outcome == "sent":
                sent += 1
                waiting.discard(incident_id)
            elif outcome == "failed":
                failed += 1
                waiting.discard(incident_id)
            elif outcome == "down":
                break
        return sent, failed

    def _deliver_one(self, channel: str, row_id: int, now: datetime) -> str:
        """sent | failed | down | busy (another process holds the row) for one outbox row, in its own
        transaction: the row stays locked while it is sent, so no two processes send it at once."""
        with self._uow() as uow:
            session = uow.session
            row = session.execute(select(NotificationOutbox).where(
                NotificationOutbox.id == row_id, NotificationOutbox.status == "pending")
                .with_for_update(skip_locked=True)).scalar_one_or_none()
            if row is None:
                return "busy"
            try:
                self._channels[channel].send(row.body, delivery_id=f"{self._settings.installation}-{row.id}")
            except ChannelUnavailable as exc:
                _retry_later(row, str(exc), now, exc.retry_after_s)
                uow.commit()
                log.warning("incident event not delivered; it stays queued", extra={
                    "channel": channel, "incident_id": row.incident_id, "event": row.event,
                    "attempts": row.attempts, "error": str(exc)})
                return "down"
            except ChannelRefused as exc:
                row.attempts += 1
                row.status, row.last_error = "failed", str(exc)
                uow.commit()
                log.error("incident event refused", extra={"channel": channel, "incident_id": row.incident_id,
                                                           "event": row.event, "error": str(exc)})
                return "failed"
            row.attempts += 1
            row.status, row.sent_at, row.last_error = "sent", now, None
            uow.commit()
            return "sent"


def _retry_later(row: NotificationOutbox, error: str, now: datetime, retry_after_s: float | None) -> None:
    row.attempts += 1
    row.last_error = error
    row.next_attempt_at = now + timedelta(seconds=backoff_s(row.attempts, retry_after_s))


def _incident_url(settings: Settings, incident_id: int) -> str | None:
    base = settings.dashboard_url
    return f"{base.rstrip('/')}/incidents/{incident_id}" if base else None


def _where(incident: Incident) -> str:
    if incident.hostname and incident.gpu is not None:
        return f"{incident.hostname} GPU {incident.gpu}"
    return incident.hostname or "fleet"


def _details(incident: Incident, change: Change, settings: Settings) -> dict[str, Any]:
    return {
        "incident_id": incident.id, "status": str(incident.status), "severity": incident.severity,
        "scope": incident.scope, "family": incident.family, "hostname": incident.hostname, "gpu": incident.gpu,
        "title": incident.title, "summary": incident.summary, "occurrences": incident.occurrences,
        "opened_at": incident.opened_at.isoformat(), "acknowledged_by": incident.acknowledged_by,
        "acknowledged_at": incident.acknowledged_at.isoformat() if incident.acknowledged_at else None,
        "assignee": incident.assignee, "reason": change.reason, "url": _incident_url(settings, incident.id),
    }


def pagerduty_event(incident: Incident, change: Change, *, settings: Settings, now: datetime) -> dict[str, Any]:
    """An Events API v2 event without its routing key (added when it is sent)."""
    event: dict[str, Any] = {"event_action": change.event, "dedup_key": dedup_key(settings.installation, incident.id)}
    if change.event != "trigger":
        return event
    severity = _PD_SEVERITY.get(incident.severity, "warning")
    if change.reason == "escalated" and severity != "critical":
        severity = "error"  # a human is needed now, whatever the finding's own severity
    prefix = "Escalated: " if change.reason == "escalated" else ""
    summary = f"{prefix}{incident.title} ({_where(incident)})"
    payload: dict[str, Any] = {
        "summary": summary[:SUMMARY_LIMIT], "source": incident.hostname or f"{settings.installation} fleet",
        "severity": severity, "timestamp": (now if change.reason != "opened" else incident.opened_at).isoformat(),
        "group": settings.installation, "class": incident.family,
        "custom_details": _details(incident, change, settings),
    }
    if incident.gpu is not None:
        payload["component"] = f"GPU {incident.gpu}"
    event.update(payload=payload, client="gpuops")
    url = _incident_url(settings, incident.id)
    if url:
        event.update(client_url=url, links=[{"href": url, "text": f"gpuops incident {incident.id}"}])
    return event


def webhook_event(incident: Incident, change: Change, *, settings: Settings, now: datetime) -> dict[str, Any]:
    """The webhook's JSON: the event, why, and the incident as it stood when the event was queued."""
    return {
        "version": 1, "event": change.event, "reason": change.reason, "installation": settings.installation,
        "dedup_key": dedup_key(settings.installation, incident.id), "occurred_at": now.isoformat(),
        "incident": _details(incident, change, settings),
    }


def channels_from(settings: Settings) -> list[EventChannel]:
    """The channels the settings configure: PagerDuty when a routing key is set, the webhook when its URL is."""
    from connectors.paging import PagerDutyEvents, SignedWebhook

    channels: list[EventChannel] = []
    if settings.pagerduty_routing_key is not None:
        channels.append(PagerDutyEvents(routing_key=settings.pagerduty_routing_key.get_secret_value(),
                                        events_url=settings.pagerduty_events_url,
                                        timeout_s=settings.notify_timeout_seconds))
    if settings.webhook_url and settings.webhook_secret is not None:
        channels.append(SignedWebhook(url=settings.webhook_url, secret=settings.webhook_secret.get_secret_value(),
                                      timeout_s=settings.notify_timeout_seconds))
    return channels
