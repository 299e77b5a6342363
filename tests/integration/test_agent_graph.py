"""The graph end to end on the real store (SQLite and PostgreSQL) with the rules planner: it waits for approval
at each action of a plan, resumes in this process or in another one, and executes each action once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import select

from agent.runner import report, resume, start
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from tests.agent.helpers import approve, graph_on, open_incident
from tests.agent.world import JOURNAL_ENV, build_context, executed
from tests.conftest import GPUOPS, REPO_ROOT, gpuops_env
from tests.people import cli_env


def _incident(container: Container, incident_id: int) -> Incident:
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        return incident


def test_xid79_plan_runs_action_by_action_with_approvals(container: Container, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    ctx = build_context(container, journal)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        assert first.outcome == "" and first.planner == "rules"
        assert [a["runbook"] for a in first.plan] == ["cordon_node", "drain_node", "reboot_node"]
        assert first.waiting_for is not None and first.waiting_for["runbook"] == "cordon_node"
        assert _incident(container, incident_id).status == "awaiting_approval"
        assert executed(journal) == []

        approve(container, first.waiting_for["action_id"])
        second = resume(graph, ctx, incident_id)
        assert second.waiting_for is not None and second.waiting_for["runbook"] == "drain_node"
        approve(container, second.waiting_for["action_id"])
        third = resume(graph, ctx, incident_id)
        assert third.waiting_for is not None and third.waiting_for["runbook"] == "reboot_node"
        reboot = third.waiting_for["action_id"]

        approve(container, reboot, "alice")            # high risk: two people
        assert resume(graph, ctx, incident_id).waiting_for is not None
        approve(container, reboot, "bob")
        done = resume(graph, ctx, incident_id)

    assert done.outcome == "resolved", done
    changes = executed(journal)
    assert changes[0] == "cordon gpu-node-003" and changes.count("cordon gpu-node-003") == 1
    assert sorted(c for c in changes if c.startswith("evict")) == ["evict default/batch-0"] + [
        f"evict train/llm-3-{g}" for g in (0, 2, 4, 6)]
    assert [c for c in changes if c.startswith("reboot")] == ["reboot gpu-node-003"]
    assert _incident(container, incident_id).status == "resolved"
    with container.uow() as uow:
        kinds = [e.kind for e in uow.session.scalars(select(AuditEvent).where(AuditEvent.incident_id == incident_id))]
    assert "agent.plan" in kinds and kinds.count("agent.rehearsal") == 3 and "agent.resolved" in kinds


def test_rejection_escalates_and_executes_nothing(container: Container, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    ctx = build_context(container, journal)
    incident_id = open_incident(container, "hung_job", gpu=2)
    with graph_on(container) as graph:
        waiting = start(graph, ctx, incident_id).waiting_for
        assert waiting is not None and waiting["runbook"] == "restart_pod"
        approve(container, waiting["action_id"], decision="reject")
        final = resume(graph, ctx, incident_id)
    assert final.outcome == "escalated" and "rejected" in final.reason
    assert executed(journal) == []


def test_approval_from_a_second_process_resumes_and_executes_once(container: Container, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    ctx = build_context(container, journal)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        waiting = start(graph, ctx, incident_id).waiting_for
    assert waiting is not None
    action_id = waiting["action_id"]
    env = gpuops_env(GPUOPS_DATABASE_URL=container.settings.database_url, **cli_env(alice="approver", bob="approver"),
                     GPUOPS_AGENT_CONTEXT="tests.agent.world:context_for", PYTHONPATH=str(REPO_ROOT),
                     **{JOURNAL_ENV: str(journal)})
    command = [GPUOPS, "approve", str(action_id), "--user", "alice", "--json"]
    # A double click from two processes at once: both record (one is a duplicate), both resume the thread,
    # the action executes once.
    procs = [subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    assert executed(journal) == ["cordon gpu-node-003"]
    with container.uow() as uow:
        assert uow.session.get(Action, action_id).status == "succeeded"  # type: ignore[union-attr]
    with graph_on(container) as graph:
        now = report(graph, ctx, incident_id)
    assert now.waiting_for is not None and now.waiting_for["runbook"] == "drain_node"


def test_unauthorised_cli_approval_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url))
    ctx = build_context(container, tmp_path / "journal")
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        waiting = start(graph, ctx, incident_id).waiting_for
    assert waiting is not None
    env = gpuops_env(GPUOPS_DATABASE_URL=container.settings.database_url,
                     **cli_env(alice="approver", mallory="viewer"))
    proc = subprocess.run([GPUOPS, "approve", str(waiting["action_id"]), "--user", "mallory"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    container.close()
    assert proc.returncode != 0 and "mallory is not allowed" in proc.stderr and "role viewer" in proc.stderr


def test_the_step_limit_and_tool_budget_end_in_an_escalation(container: Container, tmp_path: Path) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        final = start(graph, build_context(container, tmp_path / "journal", max_steps=5), incident_id)
    assert final.outcome == "escalated" and "step limit of 5" in final.reason
    assert _incident(container, incident_id).status == "escalated"

    other = open_incident(container, "thermal", node="gpu-node-005")
    with graph_on(container) as graph:
        waiting = start(graph, build_context(container, tmp_path / "journal", max_tool_calls=1), other)
    assert waiting.waiting_for is not None
    assert any("tool budget of 1 reached" in note for note in waiting.notes)


def test_a_rejection_without_a_cluster_here_is_recorded_and_resumes_later(sqlite_url: str, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url))
    ctx = build_context(container, tmp_path / "journal")
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        waiting = start(graph, ctx, incident_id).waiting_for
    assert waiting is not None
    env = gpuops_env(GPUOPS_DATABASE_URL=sqlite_url, **cli_env(alice="approver"), KUBECONFIG=str(tmp_path / "none"),
                     HOME=str(tmp_path))
    proc = subprocess.run([GPUOPS, "reject", str(waiting["action_id"]), "--user", "alice", "--reason", "not now"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "reject recorded by alice" in proc.stdout and "the running gpuops service" in proc.stdout
    # no configuration error after a decision that stands
    assert "kube-config" not in proc.stdout + proc.stderr and "WARNING" not in proc.stderr
    with graph_on(container) as graph:  # the agent's next run picks the thread up
        final = resume(graph, ctx, incident_id)
    container.close()
    assert final.outcome == "escalated" and "rejected" in final.reason


def test_a_plan_that_only_notifies_hands_the_incident_to_a_human_and_a_new_round_counts_its_own_steps(
        container: Container, tmp_path: Path) -> None:
    from gpuops.incidents.lifecycle import transition
    from tests.agent.world import POLICY

    policy = POLICY.model_copy(update={"auto_approve": POLICY.auto_approve | {"notify_only"}})
    ctx = build_context(container, tmp_path / "journal", policy=policy, max_steps=14)
    incident_id = open_incident(container, "anomaly", gpu=1)
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        assert [a["runbook"] for a in first.plan] == ["notify_only"]
        assert first.outcome == "escalated" and "no automated remedy" in first.reason, first
        assert first.steps < 14
        with container.uow() as uow:  # a human resolves it; the anomaly comes back and reopens it
            incident = uow.session.get(Incident, incident_id)
            assert incident is not None
            now = incident.updated_at
            transition(uow.session, incident, "resolved", reason="looked at it", actor="alice", now=now)
            transition(uow.session, incident, "open", reason="anomaly recurred", actor="incidents", now=now)
            uow.commit()
        second = start(graph, ctx, incident_id)
    # the same notification already went out: the humans have it; and the second round is not cut short by the
    # first round's steps
    assert second.outcome == "escalated" and "already ran" in second.reason, second
    assert first.steps + second.steps > 14 and second.steps < 14
