"""Who owns an incident once gpuops hands it to people: acknowledging it, assigning it to a dashboard user, notes
on its timeline, asking the agent to plan again after a rejection, resolving it by hand; and silences and
maintenance windows. The dashboard, the JSON API and the CLI all call these. Each change is one timeline entry
(where it concerns an incident) and one audit record naming the person; a person whose role may not change
ownership is refused, and the refusal is audited too (`perform`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from domain import ActionStatus, FindingKind, IncidentStatus
from gpuops.errors import Conflict, GpuopsError, NotFound
from gpuops.execution.approvals import NotAuthorised
from gpuops.incidents.lifecycle import add_timeline, can_transition, transition
from gpuops.incidents.queries import get_incident
from gpuops.store.audit import append_event
from gpuops.store.models import Incident, Silence
from gpuops.store.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)
T = TypeVar("T")
SilenceKind = Literal["silence", "maintenance"]
SILENCE_KINDS: tuple[str, ...] = ("silence", "maintenance")
SILENCE_STATES: tuple[str, ...] = ("active", "pending", "expired")
MAX_WINDOW = timedelta(days=90)
MAX_LEAD = timedelta(days=366)  # how far ahead a window may be planned
MAX_NOTE_CHARS = 4000
MAX_REASON_CHARS = 2000
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Actions that have not run: resolving the incident by hand stops them, so nobody approves (or the sweep runs) a
# plan for an incident that is over.
NOT_RUN = (ActionStatus.PROPOSED, ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED)


class InvalidInput(GpuopsError):
    """A value a person typed is not acceptable; the message says what is."""


@dataclass(frozen=True)
class Actor:
    """The person changing ownership (their dashboard user name), the channel (dashboard, api, cli), whether
    their role allows it, and, when it does not, what to change so that it would."""

    name: str
    channel: str
    authorised: bool
    refused_because: str = ""


def perform(uow: UnitOfWorkFactory, actor: Actor, *, what: str, incident_id: int | None,
            change: Callable[[Session], T]) -> T:
    """Run `change` in one transaction as `actor`, or refuse: a refusal is audited (`ownership.refused`) and
    committed, then raised as NotAuthorised naming what to change."""
    with uow() as unit:
        if not actor.authorised:
            because = f" ({actor.refused_because})" if actor.refused_because else ""
            append_event(unit.session, actor=actor.name, kind="ownership.refused", incident_id=incident_id,
                         data={"what": what, "channel": actor.channel, "why": actor.refused_because})
            unit.commit()
            raise NotAuthorised(f"{actor.name} may not {what}{because}")
        result = change(unit.session)
        unit.commit()
        return result


def _text(value: str, *, name: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInput(f"{name} is empty; say why in a few words")
    if len(text) > limit:
        raise InvalidInput(f"{name} is {len(text)} characters; at most {limit}")
    if "\x00" in text:
        raise InvalidInput(f"{name} holds a NUL character")
    return text


def _audit(session: Session, actor: Actor, kind: str, incident: Incident | None, now: datetime,
           **data: Any) -> None:
    append_event(session, actor=actor.name, kind=kind, incident_id=incident.id if incident else None,
                 data={"channel": actor.channel, **data}, ts=now)


# -- incidents ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnershipChange:
    """What a change did to an incident (`changed` False: it was so already, and nothing was recorded)."""

    incident_id: int
    changed: bool
    status: str
    acknowledged_by: str | None
    assignee: str | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "changed": self.changed, "status": self.status,
                "acknowledged_by": self.acknowledged_by, "assignee": self.assignee, "detail": self.detail}


def _change(incident: Incident, changed: bool, detail: str = "") -> OwnershipChange:
    return OwnershipChange(incident.id, changed, incident.status, incident.acknowledged_by, incident.assignee,
                           detail)


def _locked(session: Session, incident_id: int) -> Incident:
    incident = session.scalars(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
    return incident if incident is not None else get_incident(session, incident_id)  # NotFound


def acknowledge(session: Session, *, incident_id: int, actor: Actor, now: datetime) -> OwnershipChange:
    """`actor` has seen the incident and is on it. Acknowledging one already acknowledged changes nothing."""
    incident = _locked(session, incident_id)
    if incident.acknowledged_at is not None:
        return _change(incident, False, f"already acknowledged by {incident.acknowledged_by}")
    if incident.status in IncidentStatus.CLOSED:
        raise Conflict(f"incident {incident.id} is {incident.status}; there is nothing to acknowledge")
    incident.acknowledged_at, incident.acknowledged_by = now, actor.name
    add_timeline(session, incident, kind="acknowledged", message=f"acknowledged by {actor.name}", now=now,
                 data={"actor": actor.name, "channel": actor.channel})
    _audit(session, actor, "incident.acknowledged", incident, now)
    return _change(incident, True)


def assign(session: Session, *, incident_id: int, assignee: str | None, actor: Actor, now: datetime,
           is_user: Callable[[str], bool]) -> OwnershipChange:
    """Hand the incident to `assignee` (a dashboard user), or to nobody (None)."""
    name = (assignee or "").strip() or None
    if name is not None and not is_user(name):
        raise InvalidInput(f"{name!r} is not a dashboard user; assign to a user in GPUOPS_USERS")
    incident = _locked(session, incident_id)
    if incident.assignee == name:
        return _change(incident, False, f"already assigned to {name}" if name else "already unassigned")
    before, incident.assignee = incident.assignee, name
    message = f"assigned to {name} by {actor.name}" if name else f"unassigned by {actor.name}"
    add_timeline(session, incident, kind="assigned", message=message, now=now,
                 data={"actor": actor.name, "assignee": name, "before": before})
    _audit(session, actor, "incident.assigned", incident, now, assignee=name, before=before)
    return _change(incident, True)


def add_note(session: Session, *, incident_id: int, text: str, actor: Actor, now: datetime) -> OwnershipChange:
    """A note on the incident's timeline, by its author (shown escaped: it is text, never markup)."""
    note = _text(text, name="the note", limit=MAX_NOTE_CHARS)
    incident = _locked(session, incident_id)
    add_timeline(session, incident, kind="note", message=note, now=now,
                 data={"actor": actor.name, "author": actor.name, "channel": actor.channel})
    _audit(session, actor, "incident.note", incident, now, text=note)
    return _change(incident, True)


def rejected_steps(incident: Incident) -> list[dict[str, Any]]:
    """The actions people rejected on this incident, oldest first, with who rejected them and why."""
    steps = []
    for action in incident.actions:
        if action.status != ActionStatus.REJECTED:
            continue
        rejections = [a for a in action.approvals if a.decision == "reject"]
        steps.append({"action_id": action.id, "runbook": action.runbook, "targets": list(action.targets),
                      "by": ", ".join(a.approver for a in rejections),
                      "reason": "; ".join(a.reason for a in rejections if a.reason)[:MAX_REASON_CHARS]})
    return steps


def request_replan(session: Session, *, incident_id: int, reason: str, actor: Actor,
                   now: datetime) -> OwnershipChange:
    """Ask the agent to plan again after people rejected its plan. The rejected steps and `reason` go into the
    incident's details, where the planners read them (neither proposes a rejected step again); the caller then
    hands the incident to the agent, whose new plan goes through policy and approval like any other."""
    why = _text(reason, name="the reason", limit=MAX_REASON_CHARS)
    incident = _locked(session, incident_id)
    rejected = rejected_steps(incident)
    if not rejected:
        raise Conflict(f"incident {incident.id} has no rejected action; re-planning follows a rejection")
    waiting = [a.id for a in incident.actions if a.status in (*NOT_RUN, *ActionStatus.RUNNING)]
    if waiting or incident.status != IncidentStatus.ESCALATED:
        what = f"action {waiting[0]} is still open" if waiting else f"it is {incident.status}"
        raise Conflict(f"incident {incident.id} cannot be re-planned now: {what}; re-planning is for an "
                       "escalated incident whose plan was rejected")
    rounds = int((incident.details or {}).get("replan", {}).get("count", 0)) + 1
    incident.details = {**(incident.details or {}), "replan": {
        "count": rounds, "reason": why, "requested_by": actor.name, "requested_at": now.isoformat(),
        "rejected": rejected}}
    add_timeline(session, incident, kind="replan_requested", now=now,
                 message=f"{actor.name} asked the agent to plan again: {why}",
                 data={"actor": actor.name, "reason": why, "rejected": rejected})
    _audit(session, actor, "incident.replan_requested", incident, now, reason=why,
           rejected=[r["action_id"] for r in rejected], round=rounds)
    return _change(incident, True, f"re-plan {rounds} requested; {len(rejected)} rejected step(s) excluded")


@dataclass(frozen=True)
class Resolution:
    change: OwnershipChange
    stopped: list[int]  # actions that had not run and will not now

    def to_json(self) -> dict[str, Any]:
        return {**self.change.to_json(), "stopped_actions": self.stopped}


class ProgressNotifier(Protocol):
    def progress(self, action_id: int, status: str, detail: str) -> None: ...


def tell_stopped(notifier: ProgressNotifier, resolution: Resolution, by: str) -> None:
    """Tell the approval channels (Slack) that the actions a manual resolution stopped take no more decisions;
    a channel being down never undoes the resolution."""
    for action_id in resolution.stopped:
        try:
            notifier.progress(action_id, ActionStatus.EXPIRED, f"incident resolved by hand by {by}; no decision "
                                                               "is needed any more")
        except Exception:
            log.exception("could not tell the notifier about a stopped action", extra={"action_id": action_id})


def resolve(session: Session, *, incident_id: int, reason: str, actor: Actor, now: datetime) -> Resolution:
    """Close the incident by hand, saying why. Actions of it that have not run are expired (no approval waits on
    a closed incident, and the sweep never runs one); an action that is running must finish first."""
    why = _text(reason, name="the reason", limit=MAX_REASON_CHARS)
    incident = _locked(session, incident_id)
    if incident.status == IncidentStatus.RESOLVED:
        return Resolution(_change(incident, False, "already resolved"), [])
    running = [a.id for a in incident.actions if a.status in ActionStatus.RUNNING]
    if running or not can_transition(incident.status, IncidentStatus.RESOLVED):
        what = f"action {running[0]} is running" if running else f"it is {incident.status}"
        raise Conflict(f"incident {incident.id} cannot be resolved now: {what}; wait until it finishes")
    stopped = []
    for action in incident.actions:
        if action.status in NOT_RUN:
            before, action.status = action.status, ActionStatus.EXPIRED
            action.updated_at = now
            append_event(session, actor=actor.name, kind="action.cancelled", incident_id=incident.id,
                         action_id=action.id, data={"before": before, "why": f"incident resolved by {actor.name}",
                                                    "channel": actor.channel}, ts=now)
            stopped.append(action.id)
    incident.held_until = None
    transition(session, incident, IncidentStatus.RESOLVED, reason=f"resolved by {actor.name}: {why}",
               actor=actor.name, now=now)
    _audit(session, actor, "incident.resolved_by_hand", incident, now, reason=why, stopped_actions=stopped)
    return Resolution(_change(incident, True), stopped)


# -- silences and maintenance windows --------------------------------------------------------------------------


def parse_duration(value: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1w` as a timedelta; InvalidInput otherwise."""
    found = _DURATION.match(value or "")
    if found is None:
        raise InvalidInput(f"duration {value!r} is not like 90s, 15m, 2h, 1d or 1w")
    length = timedelta(seconds=float(found.group(1)) * _UNIT_S[found.group(2)])
    if length <= timedelta(0) or length > MAX_WINDOW:
        raise InvalidInput(f"duration {value!r} must be above zero and at most {MAX_WINDOW.days} days")
    return length


@dataclass(frozen=True)
class SilenceRequest:
    """A silence or a maintenance window as a person asks for it: what it matches, from when to when, and why.
    A silence needs a hostname or a family; a maintenance window is on a node, so it needs a hostname."""

    kind: str
    hostname: str | None
    family: str | None
    reason: str
    starts_at: datetime | None = None     # None: now
    ends_at: datetime | None = None
    duration: str | None = None           # instead of ends_at


def silence_state(silence: Silence, now: datetime) -> str:
    if silence.ends_at <= now:
        return "expired"
    return "pending" if silence.starts_at > now else "active"


def _window(request: SilenceRequest, now: datetime) -> tuple[datetime, datetime]:
    starts = request.starts_at or now
    if starts.tzinfo is None:
        raise InvalidInput("the start needs a time zone (for example 2026-12-04T18:00:00Z)")
    if starts - now > MAX_LEAD:
        raise InvalidInput(f"a window starts within {MAX_LEAD.days} days from now")
    if (request.ends_at is None) == (request.duration is None):
        raise InvalidInput("give either an end time or a duration (like 2h)")
    try:
        ends = request.ends_at if request.ends_at is not None else starts + parse_duration(request.duration or "")
    except OverflowError as exc:
        raise InvalidInput("the window ends beyond the calendar; give an earlier start or a shorter duration") from exc
    if ends.tzinfo is None:
        raise InvalidInput("the end needs a time zone (for example 2026-12-04T20:00:00Z)")
    if ends <= starts:
        raise InvalidInput("the window ends before it starts")
    if ends <= now:
        raise InvalidInput("the window is over already; give an end in the future")
    if ends - starts > MAX_WINDOW:
        raise InvalidInput(f"a window lasts at most {MAX_WINDOW.days} days")
    return starts, ends


def create_silence(session: Session, *, request: SilenceRequest, actor: Actor, now: datetime) -> Silence:
    """Store a silence or maintenance window, audited. Runs in the caller's transaction."""
    if request.kind not in SILENCE_KINDS:
        raise InvalidInput(f"kind {request.kind!r} is not one of {', '.join(SILENCE_KINDS)}")
    hostname = (request.hostname or "").strip() or None
    family = (request.family or "").strip() or None
    if hostname is not None and not HOSTNAME.match(hostname):
        raise InvalidInput(f"hostname {hostname!r} is not a node name (letters, digits, '.', '-', '_')")
    if family is not None and family not in set(FindingKind):
        raise InvalidInput(f"family {family!r} is not one of {', '.join(k.value for k in FindingKind)}")
    if request.kind == "maintenance" and hostname is None:
        raise InvalidInput("a maintenance window is on a node: give its hostname")
    if hostname is None and family is None:
        raise InvalidInput("a silence matching everything would hide every incident: give a hostname, a family, "
                           "or both")
    why = _text(request.reason, name="the reason", limit=MAX_REASON_CHARS)
    starts, ends = _window(request, now)
    silence = Silence(kind=request.kind, hostname=hostname, family=family, starts_at=starts, ends_at=ends,
                      reason=why, created_by=actor.name, created_at=now)
    session.add(silence)
    session.flush()
    append_event(session, actor=actor.name, kind=f"{request.kind}.created", ts=now,
                 data={"id": silence.id, "hostname": hostname, "family": family, "starts_at": starts.isoformat(),
                       "ends_at": ends.isoformat(), "reason": why, "channel": actor.channel})
    return silence


def list_silences(session: Session, *, now: datetime, kind: str | None = None, state: str | None = None,
                  limit: int = 200) -> list[Silence]:
    """Silences and maintenance windows, newest first; expired ones stay, as history."""
    if kind is not None and kind not in SILENCE_KINDS:
        raise InvalidInput(f"kind {kind!r} is not one of {', '.join(SILENCE_KINDS)}")
    if state is not None and state not in SILENCE_STATES:
        raise InvalidInput(f"state {state!r} is not one of {', '.join(SILENCE_STATES)}")
    stmt = select(Silence)
    if kind is not None:
        stmt = stmt.where(Silence.kind == kind)
    if state == "expired":
        stmt = stmt.where(Silence.ends_at <= now)
    elif state == "active":
        stmt = stmt.where(Silence.starts_at <= now, Silence.ends_at > now)
    elif state == "pending":
        stmt = stmt.where(Silence.starts_at > now, Silence.ends_at > now)
    return list(session.scalars(stmt.order_by(Silence.id.desc()).limit(limit)))


def expire_silence(session: Session, *, silence_id: int, actor: Actor, now: datetime,
                   kind: str | None = None) -> tuple[Silence, bool]:
    """End a silence or window now (one that has not started yet is called off). Returns it and whether this
    call ended it (an expired one stays as it was)."""
    silence = session.get(Silence, silence_id)
    if silence is None or (kind is not None and silence.kind != kind):
        what = "maintenance window" if kind == "maintenance" else "silence"
        raise NotFound(f"{what} {silence_id} does not exist; list them to see the ids")
    if silence.ends_at <= now:
        return silence, False
    before = silence_state(silence, now)
    silence.ends_at = now
    silence.starts_at = min(silence.starts_at, now)
    silence.expired_at, silence.expired_by = now, actor.name
    append_event(session, actor=actor.name, kind=f"{silence.kind}.expired", ts=now,
                 data={"id": silence.id, "hostname": silence.hostname, "family": silence.family, "was": before,
                       "channel": actor.channel})
    return silence, True


def silence_view(silence: Silence, now: datetime) -> dict[str, Any]:
    return {"id": silence.id, "kind": silence.kind, "hostname": silence.hostname, "family": silence.family,
            "starts_at": silence.starts_at.isoformat(), "ends_at": silence.ends_at.isoformat(),
            "reason": silence.reason, "created_by": silence.created_by, "created_at": silence.created_at.isoformat(),
            "expired_by": silence.expired_by,
            "expired_at": silence.expired_at.isoformat() if silence.expired_at else None,
            "state": silence_state(silence, now)}


def in_maintenance(session: Session, hostname: str, now: datetime, family: str | None = None) -> bool:
    """Whether a maintenance window matching `hostname` (and `family`, when the window names one) is in force."""
    return session.scalars(select(Silence.id).where(
        Silence.kind == "maintenance", Silence.hostname == hostname, Silence.starts_at <= now, Silence.ends_at > now,
        or_(Silence.family.is_(None), Silence.family == family) if family else Silence.family.is_(None),
    ).limit(1)).first() is not None
