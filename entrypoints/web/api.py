"""The JSON API: incidents, actions, decisions, the audit trail and the fleet, under the dashboard's sign-in
(HTTP Basic for clients, or the session cookie plus its CSRF token header for POSTs). Its OpenAPI document is
served at /api/openapi.json to signed-in users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from domain import ActionStatus, IncidentStatus, Severity, clock
from entrypoints.web.auth import ApiUser, ApiWriter, SignedIn
from entrypoints.web.decide import decide_on_action
from entrypoints.web.fleet import fleet_view
from entrypoints.web.limits import StrictJsonRoute
from entrypoints.web.views import action_view, audit_view, incident_view, list_actions
from gpuops.errors import NotFound
from gpuops.execution.approvals import NotAuthorised
from gpuops.incidents.queries import finding_summary, incident_summary, list_findings, list_incidents
from gpuops.store.audit import read_only_session, verify_recent
from gpuops.store.models import Action
from gpuops.wiring import Container

UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}
router = APIRouter(prefix="/api", tags=["api"], responses=UNAUTHENTICATED, route_class=StrictJsonRoute)


def db_session(request: Request) -> Any:
    container: Container = request.app.state.container
    with container.session_factory() as session:
        yield session


DbSession = Annotated[Session, Depends(db_session)]
Id = Annotated[int, Path(ge=1, le=2_147_483_647)]


class DecisionRequest(BaseModel):
    """A decision on the plan the caller saw: its hash (from the action) binds the decision to that plan."""

    plan_hash: str = Field(pattern=r"^[0-9a-f]{1,64}$", description="the action's plan_hash as the caller saw it")
    reason: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")


class DecisionResult(BaseModel):
    action_id: int
    incident_id: int
    decision: str
    by: str
    status: str
    approvals: int
    approvals_required: int
    duplicate: bool


@router.get("/me")
def me(user: ApiUser) -> dict[str, Any]:
    """Who the API thinks you are."""
    return {"name": user.name, "role": user.role, "via": user.via}


@router.get("/incidents")
def api_incidents(
    _user: ApiUser, session: DbSession,
    status: Annotated[IncidentStatus | None, Query()] = None,
    severity: Annotated[Severity | None, Query()] = None,
    node: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    rows = list_incidents(session, status=status, severity=severity, hostname=node, limit=limit)
    return [incident_summary(i) for i in rows]


@router.get("/findings")
def api_findings(
    _user: ApiUser, session: DbSession,
    node: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    gpu: Annotated[int | None, Query(ge=0, le=1024)] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9_.]+$")] = None,
    incident_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    before: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """What the detectors found, newest first: every amber GPU on the fleet page says why here."""
    rows = list_findings(session, hostname=node, gpu=gpu, kind=kind, incident_id=incident_id, before_id=before,
                         limit=limit)
    return [finding_summary(f) for f in rows]


@router.get("/incidents/{incident_id}", responses={404: {"description": "No such incident"}})
def api_incident(incident_id: Id, _user: ApiUser, session: DbSession) -> dict[str, Any]:
    """An incident with its timeline, the agent's rationale and its actions."""
    return incident_view(session, incident_id, clock.now())


@router.get("/actions")
def api_actions(_user: ApiUser, session: DbSession,
                status: Annotated[ActionStatus | None, Query()] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    now = clock.now()
    return [action_view(a, now) for a in list_actions(session, status=status, limit=limit)]


@router.get("/actions/{action_id}", responses={404: {"description": "No such action"}})
def api_action(action_id: Id, _user: ApiUser, session: DbSession) -> dict[str, Any]:
    action = session.get(Action, action_id)
    if action is None:
        raise NotFound(f"action {action_id} does not exist")
    return action_view(action, clock.now())


def _decide(request: Request, user: SignedIn, action_id: int, decision: str, body: DecisionRequest) -> JSONResponse:
    recorded = decide_on_action(request.app.state.pipeline, user=user,
                                action_id=action_id, decision=decision, plan_hash=body.plan_hash,
                                reason=body.reason)
    outcome = recorded.outcome
    if outcome.refusal_kind == "not_authorised":
        raise NotAuthorised(outcome.refusal or "not authorised")
    outcome.raise_for_refusal()
    result = DecisionResult(action_id=action_id, incident_id=recorded.incident_id, decision=decision, by=user.name,
                            status=outcome.status, approvals=outcome.approvals,
                            approvals_required=outcome.approvals_required, duplicate=outcome.duplicate)
    return JSONResponse(result.model_dump())


DECISION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": DecisionResult}, 403: {"description": "Role may not decide, or CSRF token missing"},
    404: {"description": "No such action"},
    409: {"description": "Refused: the plan changed since it was shown, or the action takes no more decisions"},
}


@router.post("/actions/{action_id}/approve", responses=DECISION_RESPONSES, response_model=DecisionResult)
def api_approve(action_id: Id, body: DecisionRequest, request: Request, user: ApiWriter) -> JSONResponse:
    """Approve the plan you saw (its `plan_hash`); recorded with your user name."""
    return _decide(request, user, action_id, "approve", body)


@router.post("/actions/{action_id}/reject", responses=DECISION_RESPONSES, response_model=DecisionResult)
def api_reject(action_id: Id, body: DecisionRequest, request: Request, user: ApiWriter) -> JSONResponse:
    """Reject the plan you saw; the incident escalates to a human."""
    return _decide(request, user, action_id, "reject", body)


@router.get("/audit")
def api_audit(request: Request, _user: ApiUser,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200,
              before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
              incident_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
              verify: bool = True) -> dict[str, Any]:
    """The audit trail, newest first, and (unless verify=false) the hash chain's verification: incremental from
    what this process verified last (or the newest signed checkpoint), at most 20,000 events a call, read without
    the SQLite write lock. `gpuops audit verify` checks the whole chain."""
    container: Container = request.app.state.container
    with read_only_session(container.session_factory) as session:
        result = audit_view(session, limit=limit, before=before, incident_id=incident_id)
    if verify:
        result["chain"] = verify_recent(container.session_factory).as_dict()
    return result


@router.get("/fleet")
def api_fleet(request: Request, _user: ApiUser, session: DbSession) -> dict[str, Any]:
    """Nodes and GPUs with their health, nodes out of service, and the budgets in use."""
    return fleet_view(request.app.state.container, session, clock.now())


@router.get("/openapi.json", include_in_schema=False)
def openapi_document(request: Request, _user: ApiUser) -> JSONResponse:
    return JSONResponse(request.app.openapi())
