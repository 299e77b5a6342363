"""FastAPI application factory. Errors are mapped to HTTP in one place (`_install_error_handlers`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gpuops.errors import Conflict, GpuopsError, NotFound, StoreError
from gpuops.incidents.queries import get_incident, incident_detail, incident_summary, list_incidents
from gpuops.wiring import Container

HERE = Path(__file__).parent
STATUSES = ("open", "investigating", "awaiting_approval", "executing", "verifying", "resolved", "escalated",
            "suppressed")
SEVERITIES = ("critical", "warning", "info")


def db_session(request: Request) -> Iterator[Session]:
    """One session per request, from the app's container."""
    container: Container = request.app.state.container
    with container.session_factory() as session:
        yield session


DbSession = Annotated[Session, Depends(db_session)]


def create_app(container: Container) -> FastAPI:
    app = FastAPI(title="gpuops", version="0.1.0",
                  description="Autonomous operations for GPU clusters: incidents, plans, approvals, audit.")
    app.state.container = container
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        container.metrics.http_requests.labels(request.method, path, str(response.status_code)).inc()
        container.metrics.http_latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz", tags=["ops"])
    def healthz(session: DbSession) -> JSONResponse:
        try:
            session.execute(text("SELECT 1"))
        except OperationalError:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"])
    def incidents_page(
        request: Request, session: DbSession,
        status: Annotated[str | None, Query()] = None,
        severity: Annotated[str | None, Query()] = None,
        node: Annotated[str | None, Query()] = None,
    ) -> HTMLResponse:
        rows = list_incidents(session, status=status or None, severity=severity or None, hostname=node or None)
        return templates.TemplateResponse(request, "incidents.html", {
            "incidents": [incident_summary(i) for i in rows],
            "filters": {"status": status or "", "severity": severity or "", "node": node or ""},
            "statuses": STATUSES, "severities": SEVERITIES,
        })

    @app.get("/api/incidents", tags=["api"])
    def api_incidents(
        session: DbSession,
        status: Annotated[str | None, Query()] = None,
        severity: Annotated[str | None, Query()] = None,
        node: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        rows = list_incidents(session, status=status, severity=severity, hostname=node, limit=limit)
        return [incident_summary(i) for i in rows]

    @app.get("/api/incidents/{incident_id}", tags=["api"])
    def api_incident(incident_id: int, session: DbSession) -> dict[str, Any]:
        return incident_detail(get_incident(session, incident_id))

    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    statuses: list[tuple[type[GpuopsError], int]] = [(NotFound, 404), (Conflict, 409), (StoreError, 503),
                                                     (GpuopsError, 400)]

    async def _handle(_request: Request, exc: Exception) -> JSONResponse:
        for kind, code in statuses:
            if isinstance(exc, kind):
                return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=code)
        return JSONResponse({"error": "InternalError", "detail": "unexpected error"}, status_code=500)

    async def _store_down(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "StoreError", "detail": "the database is unavailable; retry shortly"},
                            status_code=503)

    app.add_exception_handler(GpuopsError, _handle)
    app.add_exception_handler(OperationalError, _store_down)
