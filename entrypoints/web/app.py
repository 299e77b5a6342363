"""FastAPI application factory: the dashboard, the JSON API, live updates, /healthz and /metrics. Errors are mapped to
HTTP in one place (`_install_error_handlers`).

/healthz and /metrics are open on purpose (load balancers and Prometheus scrape them without a user; they show
counts, never incident content). Everything else needs a signed-in user (entrypoints.web.auth)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.middleware.sessions import SessionMiddleware

from entrypoints.web import alertmanager, api, cost, live, ownership, pages
from entrypoints.web.alertmanager import MalformedWebhook
from entrypoints.web.api import DbSession
from entrypoints.web.auth import Forbidden, NotAuthenticated, SignedOutSessions, UserDirectory, session_secret
from entrypoints.web.limits import BodyLimit
from entrypoints.web.runbook_docs import router as runbook_docs
from entrypoints.web.slack import mount_slack
from entrypoints.web.throttle import Busy, SignInThrottle, StreamSlots, TooManyRequests
from gpuops.errors import Conflict, GpuopsError, NotFound, StoreError
from gpuops.execution.approvals import NotAuthorised
from gpuops.pipeline import Pipeline, threaded_pipeline
from gpuops.wiring import Container

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SESSION_COOKIE = "gpuops_session"
SESSION_MAX_AGE_S = 12 * 3600
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(container: Container, *, pipeline: Pipeline | None = None, sse_poll_s: float = 1.0) -> FastAPI:
    """The web app on `container`. Decisions go through `pipeline` (default: one whose steps go to the broker,
    or, without one, run on a thread of this process); `sse_poll_s` is how often the live-update stream looks
    at the store."""
    app = FastAPI(title="gpuops", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Autonomous operations for GPU clusters: incidents, plans, approvals, audit. "
                              "Every operation needs a dashboard user: HTTP Basic, or a signed-in session whose "
                              "POSTs carry the X-CSRF-Token header.")
    settings = container.settings
    secret = session_secret(settings)
    app.state.container = container
    app.state.directory = UserDirectory(settings, key=secret.encode())
    app.state.signed_out = SignedOutSessions(SESSION_MAX_AGE_S)
    app.state.sign_in_throttle = SignInThrottle(per_user=settings.sign_in_max_failures,
                                                per_client=settings.sign_in_max_failures_per_client,
                                                window_s=settings.sign_in_window_seconds)
    app.state.event_streams = StreamSlots(settings.event_streams_per_user)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    # stored text shown as JSON (the audit trail's data) keeps its characters (→, ü), never \u escapes
    app.state.templates.env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    app.state.pipeline = pipeline or threaded_pipeline(container)
    app.state.sse_poll_s = sse_poll_s
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="lax", https_only=settings.cookie_secure)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        container.metrics.http_requests.labels(request.method, path, str(response.status_code)).inc()
        container.metrics.http_latency.labels(path).observe(time.perf_counter() - started)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz", tags=["ops"], include_in_schema=False)
    def healthz(session: DbSession) -> JSONResponse:
        try:
            session.execute(text("SELECT 1"))
        except OperationalError:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(pages.router)
    app.include_router(runbook_docs)  # /runbooks and /runbooks/<name>
    app.include_router(api.router)
    app.include_router(cost.page_router)  # /cost and /api/cost
    app.include_router(cost.api_router)
    app.include_router(live.router)
    app.include_router(alertmanager.router)  # its own bearer token, not a dashboard user
    ownership.install(app)  # acknowledge, assign, notes, re-plan, resolve; silences and maintenance windows
    _install_error_handlers(app)
    mount_slack(app, app.state.pipeline)  # POST /slack/events, when Slack is configured
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: before sessions, auth, parsing
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/events"))


def _install_error_handlers(app: FastAPI) -> None:
    statuses: list[tuple[type[GpuopsError], int]] = [
        (NotAuthenticated, 401), (Forbidden, 403), (NotAuthorised, 403), (NotFound, 404), (Conflict, 409),
        (MalformedWebhook, 422), (TooManyRequests, 429), (Busy, 503), (StoreError, 503), (GpuopsError, 400)]

    async def _handle(request: Request, exc: Exception) -> Response:
        code = next((c for kind, c in statuses if isinstance(exc, kind)), 500)
        if code == 500:
            log.error("unexpected error", exc_info=exc)
        if isinstance(exc, NotAuthenticated) and not _wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        detail = str(exc) if code != 500 else "unexpected error"
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else {}
        if _wants_json(request):
            if code == 401:
                headers["WWW-Authenticate"] = getattr(exc, "challenge", 'Basic realm="gpuops"')
            return JSONResponse({"error": type(exc).__name__ if code != 500 else "InternalError", "detail": detail},
                                status_code=code, headers=headers)
        templates: Jinja2Templates = request.app.state.templates
        response: HTMLResponse = templates.TemplateResponse(
            request, "error.html", {"status": code, "detail": detail, "user": None, "csrf_token": "",
                                    "flash": None}, status_code=code, headers=headers)
        return response

    async def _store_down(request: Request, exc: Exception) -> Response:
        return await _handle(request, StoreError("the database is unavailable; retry shortly"))

    app.add_exception_handler(GpuopsError, _handle)
    app.add_exception_handler(OperationalError, _store_down)
