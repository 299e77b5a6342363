"""Alertmanager's webhook receiver: `POST /api/alertmanager` takes its version-4 payload with the bearer token
of GPUOPS_ALERTMANAGER_TOKEN (Alertmanager's `http_config.authorization`). The token is checked (in constant
time) before the body is read; a missing or wrong one is refused with 401 and audited, and a client with too many
recent refusals is answered 429 without a check, like failed sign-ins (counted per client, so a forger elsewhere
cannot lock Alertmanager out). Without the setting the
endpoint answers 404 saying so. The alerts themselves go through the pipeline (gpuops.incidents.alerts)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from entrypoints.web.auth import NotAuthenticated
from entrypoints.web.throttle import Lockout, SignInThrottle, TooManyRequests
from gpuops.errors import GpuopsError, NotFound
from gpuops.incidents.alerts import AlertmanagerWebhook
from gpuops.pipeline import Pipeline
from gpuops.store.audit import append_event
from gpuops.wiring import Container

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["alertmanager"])
BEARER_CHALLENGE = 'Bearer realm="gpuops-alertmanager"'


class WebhookRefused(NotAuthenticated):
    """Alertmanager's bearer token is missing or wrong."""

    challenge = BEARER_CHALLENGE


class MalformedWebhook(GpuopsError):
    """The body is not Alertmanager's webhook payload (version 4)."""


def _refuse(container: Container, *, client: str, reason: str, started: Lockout | None) -> None:
    log.warning("refused an Alertmanager webhook from %s: %s", client, reason)
    with container.uow() as uow:
        append_event(uow.session, actor=f"client:{client}", kind="alertmanager.refused",
                     data={"client": client, "reason": reason,
                           **({"locked_out_s": started.retry_after_s} if started is not None else {})})
        uow.commit()


def _problems(exc: ValidationError) -> str:
    shown = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        shown.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "not an Alertmanager webhook payload (version 4): " + "; ".join(shown) + more


@router.post("/alertmanager", include_in_schema=False)  # Alertmanager's, not a user API (like /slack/events)
async def alertmanager_webhook(request: Request) -> JSONResponse:
    """Alertmanager's webhook (version 4): each firing alert becomes a finding, each resolved one may resolve
    the incident it opened."""
    pipeline: Pipeline = request.app.state.pipeline
    container = pipeline.container
    token = container.settings.alertmanager_token
    if token is None:
        raise NotFound("the Alertmanager receiver is not configured: set GPUOPS_ALERTMANAGER_TOKEN (or _FILE) and "
                       "give Alertmanager the same token as its bearer credentials")
    client = request.client.host if request.client else "unknown"
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    name = f"alertmanager:{client}"
    lockout = throttle.locked(name, client)
    if lockout is not None:
        raise TooManyRequests(f"too many refused webhooks from {client}; retry in {lockout.retry_after_s} s",
                              retry_after_s=lockout.retry_after_s)
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not supplied.strip():
        await run_in_threadpool(_refuse, container, client=client, reason="no bearer token",
                                started=throttle.failed(name, client))
        raise WebhookRefused("an Alertmanager webhook needs the bearer token of GPUOPS_ALERTMANAGER_TOKEN")
    if not hmac.compare_digest(supplied.strip().encode(), token.get_secret_value().encode()):
        await run_in_threadpool(_refuse, container, client=client, reason="wrong bearer token",
                                started=throttle.failed(name, client))
        raise WebhookRefused("the bearer token is not GPUOPS_ALERTMANAGER_TOKEN")
    throttle.succeeded(name)
    try:
        webhook = AlertmanagerWebhook.model_validate_json(await request.body())
    except ValidationError as exc:
        raise MalformedWebhook(_problems(exc)) from exc
    outcome = await run_in_threadpool(pipeline.alerts_received, webhook)
    body: dict[str, Any] = {"alerts": len(webhook.alerts), **outcome.as_dict()}
    return JSONResponse(body)
