"""The Slack notifier's outbox with the in-memory Slack port: order per action, back-off, refusals given up
after a few attempts, decisions from other channels shown on the prompt, and the wiring's choice of notifier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connectors.slack import InMemorySlack, SlackError
from connectors.slack.models import MessageRef
from gpuops.config import Settings
from gpuops.decisions import record_decision
from gpuops.execution.approvals import Approver
from gpuops.notify import NullNotifier
from gpuops.slack_notifier import MAX_REFUSED_ATTEMPTS, SlackNotifier, backoff_s
from gpuops.store import migrate
from gpuops.store.models import SlackOutbox
from gpuops.wiring import Container, bootstrap
from tests.integration.test_slack_approvals import HASH, seed_action

SLACK = {"slack_bot_token": "xoxb-x", "slack_channel": "C0OPS", "slack_signing_secret": "s"}


class RefusingSlack(InMemorySlack):
    def post_message(self, **kwargs: object) -> MessageRef:  # type: ignore[override]
        raise SlackError("chat.postMessage: Slack refused it (channel_not_found)")


@pytest.fixture
def stack(sqlite_url: str) -> Iterator[tuple[Container, InMemorySlack]]:
    migrate.upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, **SLACK)
    slack = InMemorySlack()
    container = bootstrap(settings)
    container._notifier = SlackNotifier(uow=container.uow, settings=settings, port=slack)
    try:
        yield container, slack
    finally:
        container.close()


def outbox(container: Container) -> list[tuple[str, str, int]]:
    with container.uow() as uow:
        rows = uow.session.scalars(select(SlackOutbox).order_by(SlackOutbox.id))
        return [(r.kind, r.status, r.attempts) for r in rows]


def test_the_wiring_picks_slack_only_when_configured_and_contacts_nothing(sqlite_url: str) -> None:
    plain = bootstrap(Settings(database_url=sqlite_url))
    slack = bootstrap(Settings(database_url=sqlite_url, slack_api_url="http://127.0.0.1:9/api/", **SLACK))
    try:
        assert isinstance(plain.notifier, NullNotifier)
        assert isinstance(slack.notifier, SlackNotifier)
        assert slack.notifier.port is not None  # built, not connected
    finally:
        plain.close()
        slack.close()


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_s(30) == 300.0 and backoff_s(1, retry_after_s=30) == 30.0


def test_updates_and_replies_wait_behind_an_unsent_prompt_then_go_in_order(
        stack: tuple[Container, InMemorySlack]) -> None:
    container, slack = stack
    action_id = seed_action(container)
    notifier = container.notifier
    slack.down = True
    notifier.approval_requested(action_id)
    notifier.decision_recorded(action_id)
    notifier.decision_recorded(action_id)     # one pending update is enough: it renders the state at send time
    notifier.progress(action_id, "executing", "cordoning")
    assert outbox(container) == [("post", "pending", 1), ("update", "pending", 0), ("reply", "pending", 0)]
    slack.down = False
    with container.uow() as uow:
        for row in uow.session.scalars(select(SlackOutbox)):
            row.next_attempt_at = datetime.now(tz=UTC) - timedelta(seconds=1)
        uow.commit()
    assert notifier.retry_pending() == 3
    assert [m for m, _ in slack.calls] == ["chat.postMessage", "chat.update", "chat.postMessage"]
    (_, post), (_, update), (_, reply) = slack.calls
    assert post["thread_ts"] is None and update["ts"] == reply["thread_ts"] is not None


def test_a_refused_post_is_given_up_after_a_few_attempts(stack: tuple[Container, InMemorySlack]) -> None:
    container, _ = stack
    action_id = seed_action(container)
    notifier = container.notifier
    assert isinstance(notifier, SlackNotifier)
    notifier._port = RefusingSlack()
    notifier.approval_requested(action_id)
    for _ in range(MAX_REFUSED_ATTEMPTS):
        with container.uow() as uow:
            for row in uow.session.scalars(select(SlackOutbox)):
                row.next_attempt_at = datetime.now(tz=UTC) - timedelta(seconds=1)
            uow.commit()
        notifier.retry_pending()
    assert outbox(container) == [("post", "failed", MAX_REFUSED_ATTEMPTS)]


def test_a_dashboard_decision_updates_the_slack_prompt(stack: tuple[Container, InMemorySlack]) -> None:
    container, slack = stack
    action_id = seed_action(container)
    container.notifier.approval_requested(action_id)
    recorded = record_decision(container, action_id=action_id, approver=Approver("alice", "dashboard", True),
                               decision="approve", plan_hash=HASH, reason="looks right")
    assert recorded.outcome.status == "approved"
    method, update = slack.calls[-1]
    assert method == "chat.update" and "alice (dashboard)" in str(update["blocks"])


def test_slack_settings_fail_fast_with_the_variable_named() -> None:
    from gpuops.config import load_settings
    from gpuops.errors import ConfigError

    with pytest.raises(ConfigError, match="GPUOPS_SLACK_TIMEOUT_SECONDS"):
        load_settings({"GPUOPS_SLACK_TIMEOUT_SECONDS": "0"})
    with pytest.raises(ConfigError, match="GPUOPS_SLACK_API_URL"):
        load_settings({"GPUOPS_SLACK_API_URL": "slack.internal/api"})
    s = load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "GPUOPS_SLACK_CHANNEL": "C1",
                       "GPUOPS_PROXY_ROLES": "alice:approver", "GPUOPS_SLACK_USERS": "U0ALICE:alice"})
    assert s.slack_configured and s.slack_person("U0ALICE") == "alice"
    assert not load_settings({"SLACK_BOT_TOKEN": "xoxb-1"}).slack_configured
