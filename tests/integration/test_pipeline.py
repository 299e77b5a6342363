"""The pipeline's ownership of execution: an approved action is executed by its incident's own thread; the
sweep takes it only when that thread's message was lost, and when the sweep's executor and the thread meet
on one action, it runs once and the thread waits for it instead of escalating. A CLI approval sends the next
action's prompt to Slack like any other channel."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gpuops.execution.approvals import Approver
from gpuops.pipeline import OrderedDispatcher, Pipeline, Step, SweepOutcome
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from tests.agent.helpers import open_incident
from tests.agent.world import JOURNAL_ENV, POLICY, RUNBOOK_SETTINGS, JournalCluster, default_cluster, executed
from tests.conftest import GPUOPS, REPO_ROOT, gpuops_env
from tests.people import cli_env
from tests.slack_server import TOKEN, fake_slack

ALICE, BOB = "alice", "bob"


@dataclass
class GatedCluster(JournalCluster):
    """The journalling cluster whose first eviction waits at a gate: a drain that is still running."""

    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def evict_pod(self, namespace: str, name: str, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().evict_pod(namespace, name, **kwargs)


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[Pipeline, OrderedDispatcher, GatedCluster]]:
    migrate.upgrade(db_url)
    seed = default_cluster(tmp_path / "journal")
    cluster = GatedCluster(journal=tmp_path / "journal", nodes=seed.nodes, pods=seed.pods, scales=seed.scales,
                           now=seed.now)
    container = bootstrap(_settings(db_url), cluster=cluster, policy=POLICY, runbook_settings=RUNBOOK_SETTINGS)
    dispatcher = OrderedDispatcher(cluster.clock)
    pipeline = Pipeline(container, dispatcher, clock=cluster.clock, sleep=cluster.advance, worker="incident-thread")
    dispatcher.bind(pipeline.run)
    try:
        yield pipeline, dispatcher, cluster
    finally:
        cluster.gate.set()
        container.close()


def _settings(db_url: str, **extra: Any) -> Any:
    from gpuops.config import Settings

    return Settings(database_url=db_url, dry_run=False, **extra)


def _waiting_action(container: Container, incident_id: int) -> Action:
    with container.uow() as uow:
        action = uow.session.scalars(select(Action).where(Action.incident_id == incident_id,
                                                          Action.status == "awaiting_approval")).one()
        uow.session.expunge(action)
        return action


def _approve(pipeline: Pipeline, action: Action) -> None:
    outcome = pipeline.decide(action_id=action.id, approver=Approver(ALICE, "cli", True), decision="approve",
                              plan_hash=action.plan_hash, reason="test").outcome
    assert outcome.refusal is None and outcome.status == "approved"


def test_two_executors_on_one_approved_drain_run_it_once_and_nothing_escalates(
        world: tuple[Pipeline, OrderedDispatcher, GatedCluster]) -> None:
    pipeline, dispatcher, cluster = world
    container = pipeline.container
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    pipeline.agent_step(incident_id)
    cluster.gate.set()  # the cordon evicts nothing; the gate closes again for the drain
    _approve(pipeline, _waiting_action(container, incident_id))
    dispatcher.drain()
    drain = _waiting_action(container, incident_id)
    assert drain.runbook == "drain_node"
    cluster.gate.clear()
    _approve(pipeline, drain)

    # A fresh approval belongs to the incident's thread: the sweep leaves it alone ...
    assert pipeline.sweep().taken_over == []
    # ... until the thread's message (still queued here, as if lost) waits longer than an agent step may run:
    # then the sweep takes the action.
    lost = [p for s, p in dispatcher.queued() if s == Step.AGENT_STEP]
    assert lost == [{"incident_id": incident_id, "decision": {"action_id": drain.id, "decision": "approve",
                                                              "by": ALICE}}]
    cluster.now += container.settings.task_time_limit_seconds + 1
    assert pipeline.sweep().taken_over == [drain.id]

    # The sweep's executor (another worker) claims the drain and is still evicting ...
    other = Pipeline(container, dispatcher, clock=cluster.clock, sleep=cluster.advance, worker="sweep-worker")
    sweeper = threading.Thread(target=other.execute_action, args=(drain.id,), daemon=True)
    sweeper.start()
    assert cluster.entered.wait(30), "the sweep's executor never started the drain"
    # ... when the incident's own thread finally gets its message: it waits for that executor, and escalates nothing.
    note = pipeline.agent_step(incident_id, {"action_id": drain.id, "decision": "approve", "by": ALICE})
    assert note == f"waiting while action {drain.id} runs elsewhere"
    with container.uow() as uow:
        assert uow.session.get(Incident, incident_id).status != "escalated"  # type: ignore[union-attr]
    cluster.gate.set()
    sweeper.join(30)
    assert not sweeper.is_alive()
    # The executor resumes the thread, which verifies and goes on to the plan's next action.
    dispatcher.drain()
    with container.uow() as uow:
        action = uow.session.get(Action, drain.id)
        assert action is not None and action.status == "succeeded" and action.attempts == 1
        claims = list(uow.session.scalars(select(AuditEvent).where(AuditEvent.action_id == drain.id,
                                                                  AuditEvent.kind == "action.claimed")))
        assert [c.data["worker"] for c in claims] == ["sweep-worker"]
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None and incident.status == "awaiting_approval"
    assert _waiting_action(container, incident_id).runbook == "reboot_node"
    evictions = [line for line in executed(cluster.journal) if line.startswith("evict")]
    assert len(evictions) == len(set(evictions)) > 0


def test_a_cli_approval_sends_the_next_actions_prompt(sqlite_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with fake_slack() as slack:
        migrate.upgrade(sqlite_url)
        extra = {"slack_bot_token": TOKEN, "slack_signing_secret": "s" * 32, "slack_channel": "#gpu-ops",
                 "slack_api_url": slack.api_url, "slack_timeout_seconds": 1}
        container = bootstrap(_settings(sqlite_url, **extra), cluster=default_cluster(journal), policy=POLICY,
                              runbook_settings=RUNBOOK_SETTINGS)
        try:
            dispatcher = OrderedDispatcher(lambda: 0.0)
            pipeline = Pipeline(container, dispatcher)
            incident_id = open_incident(container, "xid", evidence={"xid": 79})
            assert pipeline.agent_step(incident_id).startswith("waiting for a decision")
            (first,) = slack.wait_for("chat.postMessage")
            cordon = _waiting_action(container, incident_id)
            env = gpuops_env(GPUOPS_DATABASE_URL=sqlite_url, **cli_env(**{ALICE: "approver"}),
                             GPUOPS_AGENT_CONTEXT="tests.agent.world:context_for", PYTHONPATH=str(REPO_ROOT),
                             SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET="s" * 32,
                             GPUOPS_SLACK_CHANNEL="#gpu-ops", GPUOPS_SLACK_API_URL=slack.api_url,
                             **{JOURNAL_ENV: str(journal)})
            proc = subprocess.run([GPUOPS, "approve", str(cordon.id), "--user", ALICE], env=env, cwd=REPO_ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            drain = _waiting_action(container, incident_id)
            assert drain.runbook == "drain_node"
            prompts = slack.wait_for("chat.postMessage", count=2)
            assert f"`{cordon.runbook}`" in str(first["blocks"])
            assert any(f"`{drain.runbook}`" in str(p.get("blocks")) for p in prompts if not p.get("thread_ts"))
        finally:
            container.close()


def test_a_sweep_hands_on_nothing_until_something_waits(
        world: tuple[Pipeline, OrderedDispatcher, GatedCluster]) -> None:
    pipeline, dispatcher, cluster = world
    assert pipeline.sweep() == SweepOutcome() and dispatcher.queued() == []
    incident_id = open_incident(pipeline.container, "xid", evidence={"xid": 79})
    pipeline.agent_step(incident_id)
    action = _waiting_action(pipeline.container, incident_id)
    pipeline.clock = lambda: cluster.now + POLICY.approval_ttl_s + 1  # nobody answered
    assert pipeline.sweep().expired == [action.id]
    assert dispatcher.queued() == [(Step.AGENT_STEP, {"incident_id": incident_id, "decision": {
        "action_id": action.id, "decision": "expired"}})]


def test_the_sweep_leaves_an_approved_action_waiting_for_the_budget_to_its_thread(
        world: tuple[Pipeline, OrderedDispatcher, GatedCluster]) -> None:
    """An approved action whose incident is held (it waits for the budget: the hold's sweep resumes its thread at
    each recheck) is not lost, however long it stays approved; once the hold is due, a lost one is taken again."""
    from datetime import UTC, datetime, timedelta

    pipeline, _, cluster = world
    container = pipeline.container
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    pipeline.agent_step(incident_id)
    cordon = _waiting_action(container, incident_id)
    _approve(pipeline, cordon)
    cluster.now += container.settings.task_time_limit_seconds + 1
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        incident.held_until = datetime.fromtimestamp(cluster.now, tz=UTC) + timedelta(seconds=300)
        uow.commit()
    assert pipeline.sweep().taken_over == []
    cluster.now += 301
    assert pipeline.sweep().taken_over == [cordon.id]
