"""Approvers are people, not identities (issue 16, finding 4), over real HTTP on the real PostgreSQL: a Slack id
decides only as the dashboard user GPUOPS_SLACK_USERS links it to, and a person who approves in Slack and on
the dashboard is one approval of a two-approver plan, in either order."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gpuops.store.models import Approval, AuditEvent
from tests.integration.test_slack_approvals import (
    ALICE,
    BOB,
    HASH,
    MALLORY,
    PASSWORD,
    PEOPLE,
    World,
    _ts,
    seed_action,
    wait_until,
    world_on,
)

pytestmark = pytest.mark.postgres
VERA = "U0VERA"  # linked to vera, a viewer


@pytest.fixture
def world(postgres_url: str) -> Iterator[World]:
    with world_on(postgres_url, slack_users=(*PEOPLE.items(), (VERA, "vera"))) as w:
        yield w


def approvals(world: World, action_id: int) -> list[tuple[str, str, str]]:
    with world.container.session_factory() as session:
        rows = session.scalars(select(Approval).where(Approval.action_id == action_id).order_by(Approval.id))
        return [(a.approver, a.channel, a.decision) for a in rows]


def audited(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    with world.container.session_factory() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.kind.startswith("approval."))
                               .order_by(AuditEvent.seq))
        return [(e.kind, e.actor, dict(e.data)) for e in rows]


def dashboard_approve(world: World, user: str, action_id: int) -> httpx.Response:
    """An approval through the JSON API, signed in with HTTP Basic as a dashboard user."""
    auth = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return httpx.post(f"{world.url}/api/actions/{action_id}/approve", json={"plan_hash": HASH, "reason": "ok"},
                      headers={"Authorization": f"Basic {auth}"}, timeout=10)


def test_a_slack_id_linked_to_nobody_is_refused_and_told_which_setting_links_it(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    assert world.click(MALLORY, action_id, message_ts=_ts(world), response="mallory").status_code == 200
    (refusal,) = world.slack.wait_for("response_url")
    assert refusal["response_type"] == "ephemeral" and "GPUOPS_SLACK_USERS" in refusal["text"]
    assert f"Slack user {MALLORY} is not linked" in refusal["text"]
    assert approvals(world, action_id) == []
    ((kind, actor, data),) = audited(world)
    assert (kind, actor, data["why"], data["channel_identity"]) == ("approval.refused", f"slack:{MALLORY}",
                                                                     "not_authorised", MALLORY)


def test_a_slack_id_linked_to_a_viewer_decides_nothing(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    world.click(VERA, action_id, message_ts=_ts(world), response="vera")
    (refusal,) = world.slack.wait_for("response_url")
    assert "vera is not allowed" in refusal["text"] and "role viewer" in refusal["text"]
    assert approvals(world, action_id) == []
    assert [(kind, actor) for kind, actor, _ in audited(world)] == [("approval.refused", "vera")]


def test_a_slack_approval_is_recorded_as_the_person_with_the_slack_id_in_the_audit(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    world.click(ALICE, action_id, message_ts=_ts(world))
    (update,) = world.slack.wait_for("chat.update")
    assert f"<@{ALICE}>" in str(update["blocks"])  # Slack still shows the person as a mention
    assert approvals(world, action_id) == [("alice", "slack", "approve")]
    ((kind, actor, data),) = audited(world)
    assert (kind, actor, data["approver"], data["channel"], data["channel_identity"]) == (
        "approval.approve", "alice", "alice", "slack", ALICE)


def test_the_same_person_in_slack_then_on_the_dashboard_is_one_approval_of_two(world: World) -> None:
    action_id = seed_action(world.container, required=2)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    world.click(ALICE, action_id, message_ts=ts)
    world.slack.wait_for("chat.update")
    again = dashboard_approve(world, "alice", action_id)
    assert again.status_code == 200, again.text
    assert again.json() | {"incident_id": 0} == {
        "action_id": action_id, "incident_id": 0, "decision": "approve", "by": "alice",
        "status": "awaiting_approval", "approvals": 1, "approvals_required": 2, "duplicate": True}
    assert world.action(action_id).status == "awaiting_approval" and world.resumes.calls == []
    world.click(BOB, action_id, message_ts=ts)
    world.slack.wait_for("chat.update", count=2)
    assert world.action(action_id).status == "approved"
    assert approvals(world, action_id) == [("alice", "slack", "approve"), ("bob", "slack", "approve")]
    wait_until(lambda: len(world.resumes.calls) == 1)


def test_the_same_person_on_the_dashboard_then_in_slack_is_one_approval_of_two(world: World) -> None:
    action_id = seed_action(world.container, required=2)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    first = dashboard_approve(world, "bob", action_id)
    assert first.status_code == 200 and first.json()["approvals"] == 1
    world.click(BOB, action_id, message_ts=ts, response="bob-in-slack")
    (reply,) = world.slack.wait_for("response_url")
    assert "already approved" in reply["text"] and "(1/2 approvals)" in reply["text"]
    assert world.action(action_id).status == "awaiting_approval"
    assert approvals(world, action_id) == [("bob", "dashboard", "approve")]
    assert dashboard_approve(world, "alice", action_id).json()["status"] == "approved"


def test_a_slack_id_in_approvers_that_no_one_linked_decides_as_a_person_of_its_own(postgres_url: str) -> None:
    """GPUOPS_APPROVERS keeps its meaning for a Slack id no GPUOPS_SLACK_USERS entry links: it decides, as
    `slack:<id>`, a person distinct from every dashboard user (the start-up log says to link it)."""
    carol = "U0CAROL"
    with world_on(postgres_url, slack_users=tuple(PEOPLE.items()), approvers=(carol, ALICE)) as world:
        assert world.container.settings.unlinked_approvers() == (carol,)  # alice's id is linked: it is alice
        action_id = seed_action(world.container)
        world.container.notifier.approval_requested(action_id)
        world.click(carol, action_id, message_ts=_ts(world))
        world.slack.wait_for("chat.update")
        assert approvals(world, action_id) == [(f"slack:{carol}", "slack", "approve")]
