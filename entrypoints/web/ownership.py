"""Incident ownership on the web: acknowledge, assign, notes, re-plan after a rejection and resolve by hand, as JSON
API operations (/api/incidents/{id}/…) and as the incident page's forms; silences and maintenance windows as
/api/silences and the /silences page. Every change goes through gpuops.incidents.ownership, as the signed-in user;
a viewer is refused (403, audited), forms need the session's CSRF token, API posts a writer (see auth.api_writer)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, FastAPI, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.orm import Session

from domain import FindingKind, clock
from entrypoints.web.api import UNAUTHENTICATED, DbSession
from entrypoints.web.auth import ApiUser, ApiWriter, PageUser, SignedIn, check_csrf
from entrypoints.web.limits import StrictJsonRoute
from entrypoints.web.pages import FLASH, CsrfField, render
from gpuops.errors import Conflict
from gpuops.incidents import ownership as own
from gpuops.pipeline import Step
from gpuops.wiring import Container

T = TypeVar("T")
Id = Annotated[int, Path(ge=1, le=2_147_483_647)]
ReasonField = Annotated[str, Form(max_length=own.MAX_REASON_CHARS)]
NO_NUL = r"^[^\x00]*$"
HOST = r"^[A-Za-z0-9._-]*$"
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A value is not acceptable; the detail says which"},
    403: {"description": "Role may not change ownership (viewer), or CSRF token missing"},
    404: {"description": "No such incident or silence"},
    409: {"description": "Not now: the incident's state does not allow it"},
}

api = APIRouter(prefix="/api", tags=["ownership"], responses={**UNAUTHENTICATED, **WRITE_RESPONSES},
                route_class=StrictJsonRoute)
pages = APIRouter(include_in_schema=False)


def actor_of(user: SignedIn, channel: str) -> own.Actor:
    """The signed-in user as the person changing ownership: approvers and admins may, viewers may not."""
    return own.Actor(user.name, channel, user.can("decide"),
                     refused_because=f"role {user.role}; only approver or admin may (GPUOPS_USERS)")


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _perform(request: Request, user: SignedIn, channel: str, what: str, incident_id: int | None,
             change: Callable[[Session, own.Actor, datetime], T]) -> T:
    actor = actor_of(user, channel)
    now = clock.now()
    return own.perform(_container(request).uow, actor, what=what, incident_id=incident_id,
                       change=lambda session: change(session, actor, now))


def _is_user(request: Request) -> Callable[[str], bool]:
    settings = _container(request).settings
    return lambda name: settings.person_role(name) is not None


def _hand_to_agent(request: Request, incident_id: int) -> None:
    """The agent plans the incident again, on the pipeline's dispatcher (a worker, or this process' thread)."""
    request.app.state.pipeline.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id})


def _tell_stopped(request: Request, resolution: own.Resolution, by: str) -> None:
    own.tell_stopped(_container(request).notifier, resolution, by)


# -- the operations, shared by the API and the forms ----------------------------------------------------------


def do_ack(request: Request, user: SignedIn, channel: str, incident_id: int) -> own.OwnershipChange:
    return _perform(request, user, channel, "acknowledge incidents", incident_id,
                    lambda s, a, now: own.acknowledge(s, incident_id=incident_id, actor=a, now=now))


def do_assign(request: Request, user: SignedIn, channel: str, incident_id: int,
              assignee: str | None) -> own.OwnershipChange:
    is_user = _is_user(request)
    return _perform(request, user, channel, "assign incidents", incident_id,
                    lambda s, a, now: own.assign(s, incident_id=incident_id, assignee=assignee, actor=a, now=now,
                                                 is_user=is_user))


def do_note(request: Request, user: SignedIn, channel: str, incident_id: int, text: str) -> own.OwnershipChange:
    return _perform(request, user, channel, "add notes to incidents", incident_id,
                    lambda s, a, now: own.add_note(s, incident_id=incident_id, text=text, actor=a, now=now))


def do_replan(request: Request, user: SignedIn, channel: str, incident_id: int, reason: str) -> own.OwnershipChange:
    change = _perform(request, user, channel, "ask the agent to plan again", incident_id,
                      lambda s, a, now: own.request_replan(s, incident_id=incident_id, reason=reason, actor=a,
                                                           now=now))
    _hand_to_agent(request, incident_id)
    return change


def do_resolve(request: Request, user: SignedIn, channel: str, incident_id: int, reason: str) -> own.Resolution:
    resolution = _perform(request, user, channel, "resolve incidents", incident_id,
                          lambda s, a, now: own.resolve(s, incident_id=incident_id, reason=reason, actor=a, now=now))
    _tell_stopped(request, resolution, user.name)
    return resolution


def do_create_silence(request: Request, user: SignedIn, channel: str, ask: own.SilenceRequest) -> dict[str, Any]:
    def create(session: Session, actor: own.Actor, now: datetime) -> dict[str, Any]:
        return own.silence_view(own.create_silence(session, request=ask, actor=actor, now=now), now)

    what = "maintenance windows" if ask.kind == "maintenance" else "silences"
    return _perform(request, user, channel, f"create {what}", None, create)


def do_expire_silence(request: Request, user: SignedIn, channel: str, silence_id: int) -> dict[str, Any]:
    def expire(session: Session, actor: own.Actor, now: datetime) -> dict[str, Any]:
        silence, changed = own.expire_silence(session, silence_id=silence_id, actor=actor, now=now)
        return {**own.silence_view(silence, now), "changed": changed}

    return _perform(request, user, channel, "expire silences", None, expire)


# -- JSON API -------------------------------------------------------------------------------------------------


class AssignRequest(BaseModel):
    assignee: str | None = Field(default=None, max_length=128, pattern=NO_NUL,
                                 description="a dashboard user's name; null or empty unassigns")


class NoteRequest(BaseModel):
    text: str = Field(min_length=1, max_length=own.MAX_NOTE_CHARS, pattern=NO_NUL)


class ReasonRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=own.MAX_REASON_CHARS, pattern=NO_NUL)


class SilenceCreate(BaseModel):
    """A silence (hostname and/or family) or a maintenance window (on a node: hostname required), from
    `starts_at` (default now) until `ends_at`, or for `duration` (like 2h)."""

    kind: Literal["silence", "maintenance"] = "silence"
    hostname: str | None = Field(default=None, max_length=253, pattern=HOST)
    family: FindingKind | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    duration: str | None = Field(default=None, max_length=16, pattern=r"^\d{1,6}(\.\d{1,3})?[smhdw]$")
    reason: str = Field(min_length=1, max_length=own.MAX_REASON_CHARS, pattern=NO_NUL)

    def to_request(self) -> own.SilenceRequest:
        return own.SilenceRequest(kind=self.kind, hostname=self.hostname, family=self.family, reason=self.reason,
                                  starts_at=self.starts_at, ends_at=self.ends_at, duration=self.duration)


@api.post("/incidents/{incident_id}/ack")
def api_ack(incident_id: Id, request: Request, user: ApiWriter) -> dict[str, Any]:
    """Acknowledge the incident as yourself (again: nothing changes)."""
    return do_ack(request, user, "api", incident_id).to_json()


@api.post("/incidents/{incident_id}/assign")
def api_assign(incident_id: Id, body: AssignRequest, request: Request, user: ApiWriter) -> dict[str, Any]:
    """Assign the incident to a dashboard user, or unassign it."""
    return do_assign(request, user, "api", incident_id, body.assignee).to_json()


@api.post("/incidents/{incident_id}/notes")
def api_note(incident_id: Id, body: NoteRequest, request: Request, user: ApiWriter) -> dict[str, Any]:
    """Add a note to the incident's timeline, signed with your name."""
    return do_note(request, user, "api", incident_id, body.text).to_json()


@api.post("/incidents/{incident_id}/replan")
def api_replan(incident_id: Id, body: ReasonRequest, request: Request, user: ApiWriter) -> dict[str, Any]:
    """After a rejection: the agent plans again, told what was rejected and why, never proposing a rejected step;
    its new plan goes through policy and approval."""
    return do_replan(request, user, "api", incident_id, body.reason).to_json()


@api.post("/incidents/{incident_id}/resolve")
def api_resolve(incident_id: Id, body: ReasonRequest, request: Request, user: ApiWriter) -> dict[str, Any]:
    """Resolve the incident by hand, saying why; its actions that have not run are expired."""
    return do_resolve(request, user, "api", incident_id, body.reason).to_json()


@api.get("/silences")
def api_silences(request: Request, _user: ApiUser, session: DbSession,
                 kind: Annotated[Literal["silence", "maintenance"] | None, Query()] = None,
                 state: Annotated[Literal["active", "pending", "expired"] | None, Query()] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    """Silences and maintenance windows, newest first; expired ones stay listed, as history."""
    now = clock.now()
    return [own.silence_view(s, now) for s in own.list_silences(session, now=now, kind=kind, state=state,
                                                                limit=limit)]


@api.post("/silences")
def api_create_silence(body: SilenceCreate, request: Request, user: ApiWriter) -> dict[str, Any]:
    """Create a silence or a maintenance window. During a maintenance window gpuops takes no action on the node
    (policy rule `maintenance_window`) and what the node reports opens no incident that pages."""
    return do_create_silence(request, user, "api", body.to_request())


@api.post("/silences/{silence_id}/expire")
def api_expire_silence(silence_id: Id, request: Request, user: ApiWriter) -> dict[str, Any]:
    """End a silence or maintenance window now; it stays listed as expired."""
    return do_expire_silence(request, user, "api", silence_id)


# -- dashboard forms and the silences page --------------------------------------------------------------------


def _form(request: Request, token: str | None, back: str, attempt: Callable[[], str]) -> RedirectResponse:
    """Check the form's CSRF token, run its change and go back to the page with what happened; a value or a moment
    that does not fit (InvalidInput, Conflict) is said on the page. A refusal (viewer), a missing thing or a bad
    token is an error page."""
    check_csrf(request, token)
    try:
        request.session[FLASH] = {"kind": "ok", "text": attempt()}
    except (own.InvalidInput, Conflict) as exc:
        request.session[FLASH] = {"kind": "error", "text": f"Not done: {exc}"}
    return RedirectResponse(back, status_code=303)


@pages.post("/incidents/{incident_id}/ack")
def form_ack(request: Request, incident_id: Id, user: PageUser, token: CsrfField = None) -> Response:
    def ack() -> str:
        change = do_ack(request, user, "dashboard", incident_id)
        return f"Acknowledged by {user.name}." if change.changed else f"Already {change.detail}."

    return _form(request, token, f"/incidents/{incident_id}", ack)


@pages.post("/incidents/{incident_id}/assign")
def form_assign(request: Request, incident_id: Id, user: PageUser,
                assignee: Annotated[str, Form(max_length=128)] = "", token: CsrfField = None) -> Response:
    def assign() -> str:
        change = do_assign(request, user, "dashboard", incident_id, assignee or None)
        text = f"Assigned to {change.assignee} by {user.name}." if change.assignee else f"Unassigned by {user.name}."
        return text if change.changed else f"Nothing changed: {change.detail}."

    return _form(request, token, f"/incidents/{incident_id}", assign)


@pages.post("/incidents/{incident_id}/notes")
def form_note(request: Request, incident_id: Id, user: PageUser,
              text: Annotated[str, Form(max_length=own.MAX_NOTE_CHARS)] = "", token: CsrfField = None) -> Response:
    def note() -> str:
        do_note(request, user, "dashboard", incident_id, text)
        return f"Note added by {user.name}."

    return _form(request, token, f"/incidents/{incident_id}", note)


@pages.post("/incidents/{incident_id}/replan")
def form_replan(request: Request, incident_id: Id, user: PageUser, reason: ReasonField = "",
                token: CsrfField = None) -> Response:
    def replan() -> str:
        do_replan(request, user, "dashboard", incident_id, reason)
        return f"Re-plan requested by {user.name}: the agent plans again without the rejected step."

    return _form(request, token, f"/incidents/{incident_id}", replan)


@pages.post("/incidents/{incident_id}/resolve")
def form_resolve(request: Request, incident_id: Id, user: PageUser, reason: ReasonField = "",
                 token: CsrfField = None) -> Response:
    def resolve() -> str:
        resolution = do_resolve(request, user, "dashboard", incident_id, reason)
        if not resolution.change.changed:
            return "Already resolved."
        stopped = f" Stopped action(s) {', '.join(map(str, resolution.stopped))}." if resolution.stopped else ""
        return f"Resolved by {user.name}.{stopped}"

    return _form(request, token, f"/incidents/{incident_id}", resolve)


@pages.get("/silences", response_class=HTMLResponse)
def silences_page(request: Request, user: PageUser, session: DbSession) -> HTMLResponse:
    now = clock.now()
    rows = [own.silence_view(s, now) for s in own.list_silences(session, now=now, limit=500)]
    return render(request, "silences.html", {"silences": rows, "families": [k.value for k in FindingKind]}, user)


@pages.post("/silences")
def form_create_silence(
    request: Request, user: PageUser,
    kind: Annotated[str, Form(max_length=16)] = "silence",
    hostname: Annotated[str, Form(max_length=253)] = "",
    family: Annotated[str, Form(max_length=32)] = "",
    duration: Annotated[str, Form(max_length=16)] = "",
    reason: ReasonField = "",
    token: CsrfField = None,
) -> Response:
    def create() -> str:
        created = do_create_silence(request, user, "dashboard", own.SilenceRequest(
            kind=kind, hostname=hostname or None, family=family or None, reason=reason, duration=duration or None))
        what = "Maintenance window" if created["kind"] == "maintenance" else "Silence"
        return f"{what} {created['id']} created by {user.name}, until {created['ends_at'][:19]} UTC."

    return _form(request, token, "/silences", create)


@pages.post("/silences/{silence_id}/expire")
def form_expire_silence(request: Request, silence_id: Id, user: PageUser, token: CsrfField = None) -> Response:
    def expire() -> str:
        ended = do_expire_silence(request, user, "dashboard", silence_id)
        what = "Maintenance window" if ended["kind"] == "maintenance" else "Silence"
        return f"{what} {silence_id} ended by {user.name}." if ended["changed"] else f"{what} {silence_id} had ended."

    return _form(request, token, "/silences", expire)


def install(app: FastAPI) -> None:
    """Add the ownership routes to `app`, and the names the incident page offers to assign to."""
    app.include_router(pages)
    app.include_router(api)
    settings = app.state.container.settings
    app.state.templates.env.globals["assignable_users"] = sorted(u.name for u in settings.users)
