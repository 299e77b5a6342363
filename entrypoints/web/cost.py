"""The cost view: the /cost page (charts drawn on the server) and /api/cost, both under the dashboard's sign-in."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from domain import clock
from entrypoints.web.api import UNAUTHENTICATED, DbSession
from entrypoints.web.auth import ApiUser, PageUser
from entrypoints.web.bar_charts import bar_chart
from entrypoints.web.limits import StrictJsonRoute
from entrypoints.web.pages import _note_live_version, render
from gpuops.config import Settings
from gpuops.cost.view import Pricing, cost_view

api_router = APIRouter(prefix="/api", tags=["api"], responses=UNAUTHENTICATED, route_class=StrictJsonRoute)
page_router = APIRouter(include_in_schema=False, dependencies=[Depends(_note_live_version)])
Days = Annotated[int, Query(ge=1, le=366, description="days of deployment GPU-hours to sum, today included")]
TOP = 15  # bars per chart


def _view(request: Request, session: Any, days: int) -> dict[str, Any]:
    settings: Settings = request.app.state.container.settings
    return cost_view(session, now=clock.now(), idle_after_s=settings.idle_after_seconds,
                     pricing=Pricing(settings.gpu_hour_price, settings.gpu_hour_prices), days=days)


@api_router.get("/cost")
def api_cost(request: Request, _user: ApiUser, session: DbSession, days: Days = 7) -> dict[str, Any]:
    """GPUs allocated but idle with their cost, GPU-hours provisioned and needed per deployment over `days`, and
    GPU-hours lost per incident, runbook and ISO week (saved GPU-hours are not estimated live: `saved_note`)."""
    return _view(request, session, days)


def cost_charts(view: dict[str, Any]) -> dict[str, Markup]:
    """The page's charts from the view."""
    idle = view["idle"]
    namespaces = list(idle["by_namespace"])
    deployments = view["deployments"]["rows"][:TOP]
    losses = view["losses"]
    incidents = losses["incidents"][:TOP]
    return {
        "idle": bar_chart("Idle GPUs: cost so far, per namespace ($)", namespaces,
                          {"cost so far": [idle["by_namespace"][n]["cost"] for n in namespaces]}, decimals=2),
        "deployments": bar_chart(
            f"GPU-hours per deployment, last {view['deployments']['days']} days",
            [f"{r['namespace']}/{r['deployment']}" for r in deployments],
            {"provisioned": [r["provisioned_gpu_hours"] for r in deployments],
             "needed": [r["needed_gpu_hours"] for r in deployments]}),
        "by_incident": bar_chart("GPU-hours lost per incident (costliest first)",
                                 [f"#{i['incident_id']} {i['title']}" for i in incidents],
                                 {"lost": [i["gpu_hours_lost"] for i in incidents]}),
        "by_runbook": bar_chart("GPU-hours lost per runbook", list(losses["by_runbook"]),
                                {"lost": list(losses["by_runbook"].values())}),
        "by_week": bar_chart("GPU-hours lost per ISO week", list(losses["by_week"]),
                             {"lost": list(losses["by_week"].values())}),
    }


@page_router.get("/cost", response_class=HTMLResponse)
def cost_page(request: Request, user: PageUser, session: DbSession, days: Days = 7) -> HTMLResponse:
    view = _view(request, session, days)
    return render(request, "cost.html", {"cost": view, "charts": cost_charts(view)}, user)
