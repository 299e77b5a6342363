"""The Slack side of a click: a slack_bolt App in HTTP mode that verifies each request (v0 HMAC-SHA256 over
`v0:{timestamp}:{body}` with the signing secret, five-minute replay window; anything else is a 401), acknowledges
at once, turns Approve / Reject clicks into `ButtonClick`s for the caller to decide on, and answers the person
privately when the caller says so. Building the app contacts nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import App, BoltRequest
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from connectors.slack.blocks import APPROVE, BUTTON_ACTIONS, REJECT, mrkdwn_escape, parse_button_value
from connectors.slack.errors import SlackError
from connectors.slack.models import ButtonClick, ClickReply
from connectors.slack.port import SlackPort

log = logging.getLogger(__name__)

OnClick = Callable[[ButtonClick], ClickReply]


def click_from(body: Mapping[str, Any], action: Mapping[str, Any]) -> ButtonClick:
    """A ButtonClick from a block_actions payload and the clicked element; ValueError when it is not ours."""
    action_id, plan_hash = parse_button_value(str(action.get("value", "")))
    user = body.get("user") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    message_ts = (body.get("message") or {}).get("ts") or (body.get("container") or {}).get("message_ts")
    return ButtonClick(user_id=str(user.get("id", "")), user_name=str(user.get("username") or user.get("name") or ""),
                       decision=BUTTON_ACTIONS[str(action["action_id"])], action_id=action_id, plan_hash=plan_hash,
                       channel=channel, message_ts=message_ts, response_url=body.get("response_url"))


def _tell(port: SlackPort, click: ButtonClick, text: str) -> None:
    """Answer the clicker alone; the text (a refusal can quote a reason or a name) is escaped like every other."""
    text = mrkdwn_escape(text)
    try:
        if click.response_url:
            port.respond(click.response_url, text=text)
        elif click.channel:
            port.post_ephemeral(channel=click.channel, user=click.user_id, text=text)
    except SlackError:
        log.warning("could not answer a Slack click privately", exc_info=True,
                    extra={"action_id": click.action_id, "slack_user": click.user_id})


def build_app(*, signing_secret: str, bot_token: str, base_url: str, port: SlackPort, on_click: OnClick,
              process_before_response: bool = False) -> App:
    """The Bolt app. `on_click` records the decision (or the refusal); its reply goes to the clicker only."""

    def authorize(enterprise_id: str | None, team_id: str | None, **_: Any) -> AuthorizeResult:
        # A single workspace and a bot token from the settings: no auth.test round trip, so a click is handled
        # even while the Web API is slow.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=bot_token)

    app = App(signing_secret=signing_secret, client=WebClient(base_url=base_url), authorize=authorize,
              process_before_response=process_before_response, request_verification_enabled=True,
              token_verification_enabled=False, ssl_check_enabled=True, url_verification_enabled=True)

    def handle(ack: Callable[[], None], body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        try:
            click = click_from(body, action)
        except (ValueError, KeyError):
            log.warning("ignored a Slack click on something that is not a gpuops button")
            return
        reply = on_click(click)
        if reply.ephemeral_text:
            _tell(port, click, reply.ephemeral_text)

    app.action(APPROVE)(handle)
    app.action(REJECT)(handle)
    return app


def dispatch(app: App, *, body: bytes, query: str, headers: Mapping[str, str]) -> tuple[int, str, dict[str, str]]:
    """Run one HTTP request through the Bolt app (verification first): (status, body, headers)."""
    response = app.dispatch(BoltRequest(body=body.decode("utf-8", errors="replace"), query=query,
                                        headers={k.lower(): v for k, v in headers.items()}))
    return response.status, response.body, response.first_headers_without_set_cookie()
