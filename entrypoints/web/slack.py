"""The Slack endpoint: `mount_slack(app, container)` adds `POST /slack/events` (Events API and interactivity)
when Slack is configured. Requests are verified by their signature before anything is read; a click becomes a
decision through the pipeline's `decide`, so Slack, the dashboard and the CLI share one set of rules."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool

from connectors.slack import ButtonClick, ClickReply, SlackPort
from connectors.slack.interactivity import build_app, dispatch
from gpuops.config import Settings
from gpuops.errors import NotFound
from gpuops.execution.approvals import Approver
from gpuops.people import may_decide
from gpuops.pipeline import Pipeline
from gpuops.wiring import Container

log = logging.getLogger(__name__)

PAST = {"approve": "approved", "reject": "rejected"}


def slack_approver(settings: Settings, slack_id: str) -> Approver:
    """The person behind a Slack id: the dashboard user GPUOPS_SLACK_USERS links it to, deciding by that user's
    role; else, when GPUOPS_APPROVERS lists it, a person of its own (`slack:<id>`). Any other id is nobody:
    refused, and audited under `slack:<id>`."""
    name = settings.slack_person(slack_id)
    if name is None and slack_id in settings.unlinked_approvers():
        return Approver(identity=f"slack:{slack_id}", channel="slack", authorised=True, channel_identity=slack_id)
    if name is None:
        return Approver(identity=f"slack:{slack_id}", channel="slack", authorised=False, channel_identity=slack_id,
                        refused_because=f"Slack user {slack_id} is not linked to a gpuops user; an admin links it "
                                        "in GPUOPS_SLACK_USERS")
    role = settings.person_role(name)
    return Approver(identity=name, channel="slack", authorised=may_decide(role), channel_identity=slack_id,
                    refused_because=f"role {role}; approver or admin may decide (GPUOPS_USERS)")


def decide_from_slack(pipeline: Pipeline, click: ButtonClick) -> ClickReply:
    """Record a click as a decision on the plan the clicker saw, as the person their Slack id is linked to; a
    refusal changes nothing but the audit trail and is told to the clicker alone. A decision that settles the
    action (approved, rejected) resumes the incident's agent thread."""
    approver = slack_approver(pipeline.container.settings, click.user_id)
    try:
        recorded = pipeline.decide(action_id=click.action_id, approver=approver, decision=click.decision,
                                   plan_hash=click.plan_hash, reason=f"via Slack by {click.user_name or click.user_id}")
    except NotFound as exc:
        return ClickReply(f":warning: {exc}")
    outcome = recorded.outcome
    if outcome.refusal is not None:
        return ClickReply(f":no_entry: {outcome.refusal}. Nothing was changed.")
    if outcome.duplicate:
        return ClickReply(f"You already {PAST[click.decision]} this plan "
                          f"({outcome.approvals}/{outcome.approvals_required} approvals).")
    return ClickReply()


def _port(container: Container) -> SlackPort:
    port = getattr(container.notifier, "port", None)
    if isinstance(port, SlackPort):
        return port
    from connectors.slack import WebApiSlack

    s = container.settings
    assert s.slack_bot_token is not None
    return WebApiSlack(token=s.slack_bot_token.get_secret_value(), base_url=s.slack_api_url,
                       timeout_s=s.slack_timeout_seconds)


def mount_slack(app: FastAPI, pipeline: Pipeline) -> None:
    """Add `POST /slack/events` when SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN are set; otherwise do nothing.
    Point the Slack app's Interactivity request URL (and Events URL, if any) at it."""
    container = pipeline.container
    s = container.settings
    if s.slack_signing_secret is None or s.slack_bot_token is None:
        log.info("Slack is not configured (SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN): no /slack/events endpoint")
        return
    if s.unlinked_approvers():
        log.warning("GPUOPS_APPROVERS lists Slack ids no GPUOPS_SLACK_USERS entry links to a dashboard user: each "
                    "decides as a person of their own, so the same human approving on the dashboard counts twice; "
                    "link them", extra={"slack_ids": list(s.unlinked_approvers())})
    verifier = SignatureVerifier(s.slack_signing_secret.get_secret_value())
    bolt = build_app(signing_secret=s.slack_signing_secret.get_secret_value(),
                     bot_token=s.slack_bot_token.get_secret_value(), base_url=s.slack_api_url,
                     port=_port(container), on_click=lambda click: decide_from_slack(pipeline, click))

    @app.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        body = await request.body()
        if not verifier.is_valid_request(body, dict(request.headers)):  # before Bolt parses the body
            log.info("refused a request to /slack/events without a valid, current Slack signature")
            return Response(content="invalid request signature", status_code=401)
        status, text, headers = await run_in_threadpool(dispatch, bolt, body=body, query=request.url.query,
                                                        headers=dict(request.headers))
        return Response(content=text, status_code=status, headers=headers)
