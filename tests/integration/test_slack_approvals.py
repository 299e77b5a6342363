"""Slack approvals over real HTTP both ways: the real gpuops app (uvicorn on a loopback port) receives signed
`block_actions` payloads as Slack sends them, and the real slack_sdk WebClient posts to a local server speaking
Slack's Web API. Covers the prompt's content, verified and authorised decisions, idempotent clicks, two approvers
for high-risk plans, expiry, and posts retried while Slack is down."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from entrypoints.web.app import create_app
from entrypoints.web.auth import hash_password
from entrypoints.web.views import action_view
from gpuops.config import Settings
from gpuops.pipeline import Pipeline, Step, ThreadedDispatcher
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, FindingRecord, Incident, SlackOutbox
from gpuops.wiring import Container, bootstrap
from tests.conftest import free_port
from tests.slack_server import CHANNEL_ID, TOKEN, FakeSlack, fake_slack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE, BOB, MALLORY = "U0ALICE", "U0BOB", "U0MALLORY"
# The people behind the Slack ids: dashboard users, linked by GPUOPS_SLACK_USERS (MALLORY is linked to nobody).
PEOPLE = {ALICE: "alice", BOB: "bob"}
PASSWORD = "people-password"  # every person's dashboard password here
HASH = "c" * 64


@cache
def people_setting() -> str:
    """GPUOPS_USERS for alice and bob (approvers) and vera (viewer), all with PASSWORD."""
    digest = hash_password(PASSWORD)
    return f"alice:approver:{digest};bob:approver:{digest};vera:viewer:{digest}"


def slack_settings(db_url: str, slack: FakeSlack, **extra: Any) -> Settings:
    fields: dict[str, Any] = {"users": people_setting(), "slack_users": tuple(PEOPLE.items()), **extra}
    return Settings(database_url=db_url, slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                    slack_channel="#gpu-ops", slack_api_url=slack.api_url, dashboard_url="http://gpuops.example",
                    slack_timeout_seconds=1, **fields)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="gpuops-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Resumes:
    """A dispatcher standing in for the agent's resumption where a test seeds actions without an agent thread:
    it records the agent steps a decision hands on."""

    calls: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        if step == Step.AGENT_STEP:
            self.calls.append((int(payload["incident_id"]), dict(payload["decision"])))


@dataclass
class World:
    container: Container
    slack: FakeSlack
    url: str
    resumes: Resumes

    def click(self, user: str, action_id: int, *, decision: str = "approve", plan_hash: str = HASH,
              message_ts: str = "1.0", response: str = "r", secret: str = SECRET, age_s: float = 0.0,
              signed: bool = True) -> httpx.Response:
        return click(self.url, self.slack, user=user, action_id=action_id, decision=decision, plan_hash=plan_hash,
                     message_ts=message_ts, response=response, secret=secret, age_s=age_s, signed=signed)

    def action(self, action_id: int) -> Action:
        with self.container.uow() as uow:
            action = uow.session.get(Action, action_id)
            assert action is not None
            _ = action.approvals, action.incident
            return action

    def audit(self) -> list[tuple[str, str]]:
        with self.container.uow() as uow:
            return [(e.kind, e.actor) for e in uow.session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]


def click(url: str, slack: FakeSlack, *, user: str, action_id: int, decision: str, plan_hash: str,
          message_ts: str, response: str, secret: str = SECRET, age_s: float = 0.0,
          signed: bool = True) -> httpx.Response:
    """POST a block_actions interaction exactly as Slack does: form-encoded `payload=` JSON, signed v0."""
    payload = {
        "type": "block_actions", "api_app_id": "A0GPUOPS", "token": "unused-legacy-token",
        "team": {"id": "T0TEST", "domain": "example"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEST"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL_ID, "is_ephemeral": False},
        "trigger_id": "123.456.abc", "channel": {"id": CHANNEL_ID, "name": "gpu-ops"},
        "message": {"type": "message", "ts": message_ts, "text": "approval"},
        "response_url": slack.response_url(response),
        "actions": [{"action_id": f"gpuops_{decision}", "block_id": f"gpuops_decide_{action_id}",
                     "value": f"{action_id}:{plan_hash}", "type": "button", "action_ts": f"{time.time():.6f}"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        ts = str(int(time.time() - age_s))
        headers.update({"X-Slack-Request-Timestamp": ts,
                        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)})
    return httpx.post(f"{url}/slack/events", content=body, headers=headers, timeout=10)


def seed_action(container: Container, *, required: int = 1, created_at: datetime | None = None) -> int:
    """An incident with a finding and an action awaiting approval, with the dry run and verdict propose stores."""
    now = created_at or datetime.now(tz=UTC)
    with container.uow() as uow:
        incident = Incident(dedup_key=f"gpu-node-003/2/xid/{now.timestamp()}", scope="gpu", family="xid",
                            hostname="gpu-node-003", gpu=2, severity="critical", status="awaiting_approval",
                            title="XID 79 on gpu-node-003 GPU 2", summary="GPU fell off the bus", opened_at=now,
                            updated_at=now)
        uow.session.add(incident)
        uow.flush()
        uow.session.add(FindingRecord(ts=now, hostname="gpu-node-003", gpu=2, uuid="GPU-3-2", kind="xid",
                                      severity="critical", score=0.98, detector="rules.xid",
                                      evidence={"xid": 79, "temperature_c": 71.5, "note": "text is not shown"},
                                      incident_id=incident.id))
        action = Action(
            incident_id=incident.id, runbook="drain_node", parameters={"grace_seconds": 30},
            targets=["node/gpu-node-003"], plan_hash=HASH, idempotency_key=f"k-{incident.id}",
            status="awaiting_approval", risk="high" if required > 1 else "medium", approvals_required=required,
            rationale="XID 79 needs the node drained before a reboot", created_at=now,
            diff={"changes": ["evict 2 pods"], "pods_affected": ["train/llm-3-2", "train/llm-3-4"],
                  "gpus_affected": 8, "gpu_hours_at_risk": 12.5, "blockers": []},
            verdict={"gate": "one_approver", "budget": {"nodes_out": 0, "nodes_out_after": 1, "nodes_out_limit": 2,
                                                        "healthy_gpus_after": 56, "min_healthy_gpus": 32,
                                                        "actions_last_hour": 1, "rate_limit": 10}})
        uow.session.add(action)
        uow.commit()
        return action.id


@contextmanager
def world_on(db_url: str, *, api_url: str | None = None, **settings: Any) -> Iterator[World]:
    with fake_slack() as slack:
        migrate.upgrade(db_url)
        s = slack_settings(db_url, slack, **settings)
        if api_url:
            s = s.model_copy(update={"slack_api_url": api_url})
        container = bootstrap(s)
        resumes = Resumes()
        app = create_app(container, pipeline=Pipeline(container, resumes))
        try:
            with serve(app) as url:
                yield World(container, slack, url, resumes)
        finally:
            container.close()


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with world_on(sqlite_url) as w:
        yield w


def texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def _ts(world: World) -> str:
    """The ts of the latest prompt (not of a thread reply)."""
    ts = [ts for ts, message in world.slack.messages.items() if not message.get("thread_ts")]
    assert ts, f"nothing was posted: {world.slack.calls}"
    return ts[-1]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_prompt_shows_what_happened_evidence_plan_impact_link_and_buttons(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    world.container.notifier.approval_requested(action_id)  # asking twice posts once
    (post,) = world.slack.of("chat.postMessage")
    assert post["channel"] == "#gpu-ops" and "XID 79 on gpu-node-003 GPU 2" in post["text"]
    blocks = post["blocks"]
    shown = texts(blocks)
    for expected in ("GPU fell off the bus", "gpu-node-003 GPU 2", "*xid*\\n79", "temperature c*\\n71.5",
                     "`drain_node`", "`node/gpu-node-003`", "grace_seconds", "*Pods evicted*\\n2",
                     "*GPU-hours at risk*\\n12.5", "1/2 (1 left)", "56 (minimum 32, 24 spare)",
                     "http://gpuops.example/incidents/", "0/1"):
        assert expected in shown, expected
    assert "text is not shown" not in shown
    with world.container.session_factory() as session:  # the dashboard shows the action's budget in the same words
        action = session.get(Action, action_id)
        assert action is not None
        on_dashboard = action_view(action, datetime.now(tz=UTC))["budget"]
    assert [line["label"] for line in on_dashboard] == ["Nodes out after", "Healthy GPUs after", "Actions this hour"]
    for line in on_dashboard:
        assert json.dumps(f"*{line['label']}*\n{line['text']}")[1:-1] in shown, line
    (buttons,) = [b for b in blocks if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in buttons["elements"]] == [
        ("gpuops_approve", f"{action_id}:{HASH}"), ("gpuops_reject", f"{action_id}:{HASH}")]


def test_forged_stale_or_unsigned_requests_get_401_and_change_nothing(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    forged = world.click(ALICE, action_id, message_ts=ts, secret="not-the-signing-secret")
    stale = world.click(ALICE, action_id, message_ts=ts, age_s=6 * 60)
    unsigned = world.click(ALICE, action_id, message_ts=ts, signed=False)
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    # A signed click by a non-approver, sent after them, is answered in private once its handler finished: by
    # then any work a refused request had started would show; only the refusal of this one is there.
    assert world.click(MALLORY, action_id, message_ts=ts, response="mallory").status_code == 200
    (refusal,) = world.slack.wait_for("response_url")
    assert refusal["url"] == "/response/mallory"
    assert world.action(action_id).status == "awaiting_approval" and world.action(action_id).approvals == []
    assert world.audit() == [("approval.refused", f"slack:{MALLORY}")]
    assert world.slack.of("chat.update") == [] and world.slack.of("response_url") == [refusal]
    # A correctly signed Events API handshake is answered (the same URL serves events and interactivity).
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"})
    stamp = str(int(time.time()))
    answer = httpx.post(f"{world.url}/slack/events", content=body, headers={
        "Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)})
    assert answer.status_code == 200 and "abc123" in answer.text


def test_non_approver_gets_an_ephemeral_refusal_and_nothing_changes(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    response = world.click(MALLORY, action_id, message_ts=_ts(world), response="mallory")
    assert response.status_code == 200
    (refusal,) = world.slack.wait_for("response_url")
    assert refusal["url"] == "/response/mallory" and refusal["response_type"] == "ephemeral"
    assert refusal["replace_original"] is False and "not allowed" in refusal["text"]
    action = world.action(action_id)
    assert action.status == "awaiting_approval" and action.approvals == []
    assert world.audit() == [("approval.refused", f"slack:{MALLORY}")]
    assert world.slack.of("chat.update") == [] and world.resumes.calls == []


def test_approval_updates_the_message_and_a_double_click_is_idempotent(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    assert world.click(ALICE, action_id, message_ts=ts, response="first").status_code == 200
    (update,) = world.slack.wait_for("chat.update")
    assert update["ts"] == ts and update["channel"] == CHANNEL_ID
    shown = texts(update["blocks"])
    assert "Approved" in shown and f"<@{ALICE}>" in shown and "(1/1)" in shown
    assert not [b for b in update["blocks"] if b["type"] == "actions"], "buttons stay after the decision"
    assert world.action(action_id).status == "approved"
    wait_until(lambda: len(world.resumes.calls) == 1)
    incident_id = world.action(action_id).incident_id
    assert world.resumes.calls == [(incident_id, {"action_id": action_id, "decision": "approve", "by": "alice"})]

    assert world.click(ALICE, action_id, message_ts=ts, response="second").status_code == 200
    (again,) = world.slack.wait_for("response_url")
    assert "already approved" in again["text"]
    assert len(world.slack.of("chat.update")) == 1 and len(world.resumes.calls) == 1
    assert [k for k, _ in world.audit()] == ["approval.approve"]


def test_high_risk_plan_needs_two_distinct_approvers(world: World) -> None:
    action_id = seed_action(world.container, required=2)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    assert "needs two distinct approvers" in texts(world.slack.of("chat.postMessage")[0]["blocks"])
    world.click(ALICE, action_id, message_ts=ts)
    (first,) = world.slack.wait_for("chat.update")
    assert "Approvals 1/2" in texts(first["blocks"]) and [b for b in first["blocks"] if b["type"] == "actions"]
    assert world.action(action_id).status == "awaiting_approval" and world.resumes.calls == []
    world.click(ALICE, action_id, message_ts=ts, response="alice-again")   # the same person twice is one
    world.slack.wait_for("response_url")
    assert world.action(action_id).status == "awaiting_approval"
    world.click(BOB, action_id, message_ts=ts)
    second = world.slack.wait_for("chat.update", 2)[-1]
    assert "(2/2)" in texts(second["blocks"]) and f"<@{BOB}>" in texts(second["blocks"])
    assert world.action(action_id).status == "approved"
    wait_until(lambda: len(world.resumes.calls) == 1)


def test_rejection_updates_the_message_and_escalates(world: World) -> None:
    action_id = seed_action(world.container)
    world.container.notifier.approval_requested(action_id)
    world.click(BOB, action_id, decision="reject", message_ts=_ts(world))
    (update,) = world.slack.wait_for("chat.update")
    assert "Rejected" in texts(update["blocks"]) and f"<@{BOB}>" in texts(update["blocks"])
    action = world.action(action_id)
    assert action.status == "rejected" and action.incident.status == "escalated"


def test_expired_request_updates_the_message_and_escalates(world: World) -> None:
    created = datetime.now(tz=UTC) - timedelta(hours=2)
    action_id = seed_action(world.container, created_at=created)
    world.container.notifier.approval_requested(action_id)
    ts = _ts(world)
    # The periodic sweep, run as a worker runs it.
    from entrypoints.worker import tasks
    from entrypoints.worker.app import create_app as create_worker

    worker = create_worker(world.container.settings, wiring=lambda _settings: world.container)
    result = worker.tasks[tasks.SWEEP].apply(kwargs={})
    assert result.successful() and result.result["expired"] == [action_id]
    (update,) = world.slack.of("chat.update")
    assert update["ts"] == ts and "Expired" in texts(update["blocks"]) and "escalated" in texts(update["blocks"])
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    (reply,) = [p for p in world.slack.of("chat.postMessage") if p.get("thread_ts")]
    assert reply["thread_ts"] == ts and reply["reply_broadcast"] is True and "<!here>" in reply["text"]
    action = world.action(action_id)
    assert action.status == "expired" and action.incident.status == "escalated"
    # A click on the expired prompt is refused privately.
    world.click(ALICE, action_id, message_ts=ts, response="late")
    (late,) = world.slack.wait_for("response_url")
    assert "no longer takes decisions" in late["text"] and world.action(action_id).approvals == []


@pytest.mark.parametrize("failure", ["500", "ratelimited", "hang"])
def test_posts_while_slack_is_down_are_retried_and_delivered(world: World, failure: str) -> None:
    action_id = seed_action(world.container)
    notifier = world.container.notifier
    world.slack.down = failure
    notifier.approval_requested(action_id)          # Slack fails: queued, nothing raised
    notifier.progress(action_id, "executing", "")   # queued without another try (Slack just failed)
    assert world.slack.calls == [] and world.slack.attempts == 1
    with world.container.uow() as uow:
        rows = list(uow.session.scalars(select(SlackOutbox).order_by(SlackOutbox.id)))
        assert [(r.kind, r.status) for r in rows] == [("post", "pending"), ("reply", "pending")]
        assert rows[0].attempts == 1 and rows[0].last_error and rows[1].attempts == 0
        backoff = (rows[0].next_attempt_at - datetime.now(tz=UTC)).total_seconds()
        assert 0 < backoff <= 2.5
    world.slack.down = None
    assert notifier.retry_pending() == 0              # not due yet: back-off holds
    with world.container.uow() as uow:                # time passes
        for row in uow.session.scalars(select(SlackOutbox)):
            row.next_attempt_at = datetime.now(tz=UTC) - timedelta(seconds=1)
        uow.commit()
    assert Pipeline(world.container, world.resumes).sweep().expired == []  # the sweep retries the outbox
    (post,) = [p for p in world.slack.of("chat.postMessage") if not p.get("thread_ts")]
    (reply,) = [p for p in world.slack.of("chat.postMessage") if p.get("thread_ts")]
    assert reply["thread_ts"] == _ts(world) and "executing" in reply["text"]
    assert post["blocks"] and world.action(action_id).status == "awaiting_approval"


def test_app_starts_with_slack_unreachable_and_decisions_still_work(sqlite_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/"
    with world_on(sqlite_url, api_url=dead) as world:
        assert httpx.get(f"{world.url}/healthz").status_code == 200
        action_id = seed_action(world.container)
        world.container.notifier.approval_requested(action_id)   # queued; no exception
        response = world.click(ALICE, action_id, message_ts="1.0")
        assert response.status_code == 200
        wait_until(lambda: world.action(action_id).status == "approved")
        wait_until(lambda: len(world.resumes.calls) == 1)
        with world.container.uow() as uow:
            pending = list(uow.session.scalars(select(SlackOutbox.kind).where(SlackOutbox.status == "pending")))
        assert pending == ["post", "update"]


def test_approve_in_slack_resumes_the_agent_which_executes_and_replies_in_the_thread(db_url: str,
                                                                                      tmp_path: Path) -> None:
    """The whole path: the agent's plan waits, the prompt is posted, an approver clicks, the real resumption
    runs the action on the (in-memory) cluster, and its progress lands in the prompt's thread."""
    from tests.agent.helpers import open_incident
    from tests.agent.world import POLICY, RUNBOOK_SETTINGS, default_cluster, executed

    journal = tmp_path / "journal"
    with fake_slack() as slack:
        migrate.upgrade(db_url)
        container = bootstrap(slack_settings(db_url, slack, dry_run=False), cluster=default_cluster(journal),
                              policy=POLICY, runbook_settings=RUNBOOK_SETTINGS)
        dispatcher = ThreadedDispatcher(time.time)
        pipeline = Pipeline(container, dispatcher)
        dispatcher.bind(pipeline.run)
        app = create_app(container, pipeline=pipeline)
        try:
            with serve(app) as url:
                incident_id = open_incident(container, "xid", evidence={"xid": 79})
                note = pipeline.agent_step(incident_id)
                assert note.startswith("waiting for a decision on action")
                action_id = int(note.rsplit(" ", 1)[1])
                (prompt,) = slack.wait_for("chat.postMessage")
                with container.uow() as uow:
                    action = uow.session.get(Action, action_id)
                    assert action is not None
                    plan_hash, runbook = action.plan_hash, action.runbook
                assert f"`{runbook}`" in texts(prompt["blocks"])
                ts = next(iter(slack.messages))
                response = click(url, slack, user=ALICE, action_id=action_id, decision="approve",
                                 plan_hash=plan_hash, message_ts=ts, response="alice")
                assert response.status_code == 200
                (update,) = slack.wait_for("chat.update")
                assert "Approved" in texts(update["blocks"])
                replies = lambda: [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == ts]  # noqa: E731
                wait_until(lambda: bool(replies()), timeout=30)
                assert "succeeded" in replies()[0]["text"]
                with container.uow() as uow:
                    action = uow.session.get(Action, action_id)
                    assert action is not None and action.status == "succeeded"
                assert "cordon gpu-node-003" in executed(journal)
                # The resumed thread goes on to its next step, which waits for its own approval in a new prompt.
                wait_until(lambda: len([m for m in slack.messages.values() if not m.get("thread_ts")]) == 2,
                           timeout=30)
        finally:
            container.close()
