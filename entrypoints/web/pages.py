"""The dashboard's server-rendered pages: sign-in, incidents, an incident with its decision form, the fleet and the
audit trail. Every form carries the session's CSRF token; every page needs a signed-in user."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from domain import IncidentStatus, Severity, clock
from entrypoints.web.api import DbSession
from entrypoints.web.auth import (
    CSRF_FIELD,
    PageUser,
    SignedIn,
    check_csrf,
    check_password,
    csrf_token,
    identify,
    sign_in,
    sign_out,
)
from entrypoints.web.decide import decide_on_action
from entrypoints.web.fleet import fleet_view
from entrypoints.web.incident_page import incident_page_context
from entrypoints.web.live import live_version
from entrypoints.web.views import audit_view, incident_view
from gpuops.errors import GpuopsError, NotFound
from gpuops.incidents.queries import finding_summary, get_incident, incident_summary, list_findings, list_incidents
from gpuops.store.audit import read_only_session, verify_whole
from gpuops.store.models import Action

STATUSES = tuple(IncidentStatus)
SEVERITIES = tuple(reversed(Severity))  # the worst first
FLASH = "flash"



def _note_live_version(request: Request) -> None:
    """Before a page reads its data: the store's fingerprint, which the page hands its live-update stream."""
    if identify(request) is not None:
        request.state.live_version = live_version(request)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_note_live_version)])
Id = Annotated[int, Path(ge=1, le=2_147_483_647)]
CsrfField = Annotated[str | None, Form(alias=CSRF_FIELD)]


def render(request: Request, name: str, context: dict[str, Any], user: SignedIn | None,
           status_code: int = 200) -> HTMLResponse:
    flash = request.session.pop(FLASH, None)
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, {
        **context, "user": user, "csrf_token": csrf_token(request), "flash": flash,
        "live_version": getattr(request.state, "live_version", None)}, status_code=status_code)
    return response


def _safe_next(target: str | None) -> str:
    """Only a local path: never send a signed-in user to another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    if identify(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", {"next": _safe_next(next), "error": None}, None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, username: Annotated[str, Form(max_length=128)],
          password: Annotated[str, Form(max_length=1024)], token: CsrfField = None,
          next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    check_csrf(request, token)
    user = check_password(request, username, password, via="form")
    if user is None:
        return render(request, "login.html", {"next": _safe_next(next), "error": "Unknown user or wrong password."},
                      None, status_code=401)
    sign_in(request, user)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, token: CsrfField = None) -> Response:
    check_csrf(request, token)
    sign_out(request)
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def incidents_page(
    request: Request, user: PageUser, session: DbSession,
    status: Annotated[str | None, Query(max_length=32)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
    node: Annotated[str | None, Query(max_length=253)] = None,
) -> HTMLResponse:
    _known("status", status, STATUSES)
    _known("severity", severity, SEVERITIES)
    rows = list_incidents(session, status=status or None, severity=severity or None, hostname=node or None)
    filters = {"status": status or "", "severity": severity or "", "node": node or ""}
    return render(request, "incidents.html", {
        "incidents": [incident_summary(i) for i in rows], "filters": filters,
        "query": urlencode({k: v for k, v in filters.items() if v}),
        "statuses": STATUSES, "severities": SEVERITIES,
    }, user)


def _known(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    """An unknown filter value is refused with the valid ones (instead of a list that is silently empty)."""
    if value and value not in choices:
        raise GpuopsError(f"unknown {name} {value[:32]!r}; choose one of: {', '.join(choices)}")


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(request: Request, incident_id: Id, user: PageUser, session: DbSession) -> HTMLResponse:
    return _incident(request, session, incident_id, user)


def _incident(request: Request, session: Session, incident_id: int, user: SignedIn,
              status_code: int = 200) -> HTMLResponse:
    now = clock.now()
    view = incident_view(session, incident_id, now)
    page = incident_page_context(request.app.state.container, session, get_incident(session, incident_id), view, now)
    return render(request, "incident.html", {"incident": view, **page}, user, status_code=status_code)


@router.post("/incidents/{incident_id}/actions/{action_id}/decision")
def decide(request: Request, incident_id: Id, action_id: Id, user: PageUser,
           decision: Annotated[str, Form(pattern="^(approve|reject)$")],
           plan_hash: Annotated[str, Form(pattern=r"^[0-9a-f]{1,64}$")],
           reason: Annotated[str, Form(max_length=2000)] = "", token: CsrfField = None) -> Response:
    """Approve or reject the plan shown on the page; a refusal is shown on the page, and audited."""
    check_csrf(request, token)
    with request.app.state.container.session_factory() as session:
        action = session.get(Action, action_id)
        if action is None or action.incident_id != incident_id:
            raise NotFound(f"incident {incident_id} has no action {action_id}")
    back = f"/incidents/{incident_id}"
    if not reason.strip():
        request.session[FLASH] = {"kind": "error", "text": "Give a reason for your decision."}
        return RedirectResponse(back, status_code=303)
    recorded = decide_on_action(request.app.state.pipeline, user=user,
                                action_id=action_id, decision=decision, plan_hash=plan_hash,
                                reason=reason.strip())
    outcome = recorded.outcome
    if outcome.refusal is not None:
        request.session[FLASH] = {"kind": "error", "text": f"Refused: {outcome.refusal}"}
        if outcome.refusal_kind == "not_authorised":
            with request.app.state.container.session_factory() as session:
                return _incident(request, session, incident_id, user, status_code=403)
        return RedirectResponse(back, status_code=303)
    verb = "approved" if decision == "approve" else "rejected"
    text = (f"You already {verb} action {action_id}." if outcome.duplicate else
            f"Action {action_id} {verb} by {user.name}: now {outcome.status} "
            f"({outcome.approvals}/{outcome.approvals_required} approvals).")
    request.session[FLASH] = {"kind": "ok", "text": text}
    return RedirectResponse(back, status_code=303)


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, user: PageUser, session: DbSession) -> HTMLResponse:
    view = fleet_view(request.app.state.container, session, clock.now())
    return render(request, "fleet.html", {"fleet": view}, user)


@router.get("/findings", response_class=HTMLResponse)
def findings_page(
    request: Request, user: PageUser, session: DbSession,
    node: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9._-]*$")] = None,
    gpu: Annotated[int | None, Query(ge=0, le=1024)] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9_.]*$")] = None,
    incident: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    before: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
) -> HTMLResponse:
    """The detectors' findings, newest first, with their evidence in words and numbers."""
    rows = [finding_summary(f) for f in list_findings(session, hostname=node or None, gpu=gpu, kind=kind or None,
                                                      incident_id=incident, before_id=before, limit=200)]
    filters = {"node": node or "", "gpu": "" if gpu is None else str(gpu), "kind": kind or "",
               "incident": "" if incident is None else str(incident)}
    more = urlencode({**{k: v for k, v in filters.items() if v}, "before": rows[-1]["id"]}) if len(rows) == 200 else ""
    return render(request, "findings.html", {"findings": rows, "filters": filters, "more": more}, user)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: PageUser,
               before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
               incident: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None) -> HTMLResponse:
    """The trail and the whole chain's check, both read without the SQLite write lock."""
    factory = request.app.state.container.session_factory
    with read_only_session(factory) as session:
        view = audit_view(session, limit=200, before=before, incident_id=incident)
    view["chain"] = verify_whole(factory).as_dict()
    return render(request, "audit.html", {"audit": view, "incident": incident}, user)
