"""The budget wait, on the real store (SQLite and PostgreSQL), the real graph and policy: a node action the
nodes-out budget refuses only because gpuops' own node is still out waits for that node to come back, then
goes ahead; a budget spent on someone else's cordon, or still spent when the wait ends, goes to a human with
the budget named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from agent.runner import resume, start
from gpuops.execution.holds import due_holds
from gpuops.policy import PolicyConfig, release_node
from gpuops.store.models import Action, AuditEvent, Incident, IncidentEvent, NodeLease
from gpuops.wiring import Container
from tests.agent.helpers import T0, graph_on, mark_examined, open_incident
from tests.agent.world import POLICY, build_context, default_cluster, executed

ONE_NODE = POLICY.model_copy(update={"max_nodes_out": 1, "soak_s": 0.0, "budget_wait_s": 1800.0})
OTHER = "gpu-node-005"


def _own_node_out(container: Container, cluster, node: str = OTHER) -> None:  # type: ignore[no-untyped-def]
    """gpuops' earlier remediation of `node`: its incident, its executed cordon, the lease it holds."""
    other = open_incident(container, "ecc", node=node, gpu=1, evidence={"dbe": 1})
    with container.uow() as uow:
        action = Action(incident_id=other, runbook="cordon_node", targets=[f"node/{node}"], plan_hash="x" * 64,
                        idempotency_key=f"earlier-{node}", status="succeeded", risk="low",
                        executed_at=datetime.fromtimestamp(T0, tz=UTC))
        uow.session.add(action)
        uow.session.flush()
        uow.session.add(NodeLease(hostname=node, action_id=action.id, reason="cordon_node",
                                  acquired_at=datetime.fromtimestamp(T0, tz=UTC)))
        uow.commit()
    cluster.cordon(node, reason="earlier incident", incident=str(other))


def _examined(container: Container, until: float) -> None:
    with container.uow() as uow:
        mark_examined(uow.session, until, shard=0, shards=1)
        uow.commit()


def _due(container: Container, now: float) -> list[int]:
    with container.uow() as uow:
        return due_holds(uow.session, shards=1, now=datetime.fromtimestamp(now, tz=UTC))


def _actions(container: Container, incident_id: int) -> list[tuple[str, str]]:
    with container.uow() as uow:
        return [(a.runbook, a.status) for a in uow.session.scalars(
            select(Action).where(Action.incident_id == incident_id).order_by(Action.id))]


def _timeline(container: Container, incident_id: int, kind: str) -> list[str]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(IncidentEvent.message).where(
            IncidentEvent.incident_id == incident_id, IncidentEvent.kind == kind)))


def _return_own_node_and_resume(container: Container, cluster, ctx, graph, incident_id: int):  # type: ignore[no-untyped-def]
    """gpuops returns OTHER to service at T0 + 500; the sweep resumes the held thread at its recheck (T0 + 800)."""
    cluster.uncordon(OTHER)
    with container.uow() as uow:
        release_node(uow.session, node=OTHER, now=datetime.fromtimestamp(T0 + 500, tz=UTC))
        uow.commit()
    _examined(container, T0 + 800)
    ctx.actions.deps.clock = lambda: T0 + 800
    return resume(graph, ctx, incident_id, {"hold": "over"})


def _context(container: Container, tmp_path: Path, now: float, policy: PolicyConfig = ONE_NODE):  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal"
    cluster = default_cluster(journal)
    cluster.now = now
    return build_context(container, journal, cluster=cluster, policy=policy), cluster


def _xid_while_own_node_out(container: Container, tmp_path: Path,
                            policy: PolicyConfig = ONE_NODE):  # type: ignore[no-untyped-def]
    """An XID 79 incident on gpu-node-003 while gpuops' earlier remediation holds OTHER out; detection has
    examined its data. Returns the agent's context, the cluster and the incident."""
    ctx, cluster = _context(container, tmp_path, T0 + 30, policy)
    _own_node_out(container, cluster)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 30)
    return ctx, cluster, incident_id


def test_a_node_action_waits_for_gpuops_own_node_to_come_back_then_goes_ahead(container: Container,
                                                                             tmp_path: Path) -> None:
    ctx, cluster, incident_id = _xid_while_own_node_out(container, tmp_path)
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        assert first.held is not None and first.held["runbook"] == "cordon_node"
        assert _actions(container, incident_id) == []  # nothing proposed, nothing escalated while it waits
        [message] = _timeline(container, incident_id, "agent.held")
        assert "waits for the budget" in message and OTHER in message

        # a recheck while the other node is still out: it keeps waiting, one timeline entry for the whole wait
        _examined(container, T0 + 400)
        assert _due(container, T0 + 400) == [incident_id]
        ctx.actions.deps.clock = lambda: T0 + 400  # type: ignore[attr-defined]
        again = resume(graph, ctx, incident_id, {"hold": "over"})
        assert again.held is not None and _actions(container, incident_id) == []
        assert len(_timeline(container, incident_id, "agent.held")) == 1

        # gpuops returns the other node: the next recheck proposes the action
        after = _return_own_node_and_resume(container, cluster, ctx, graph, incident_id)
    assert after.held is None and after.waiting_for is not None and after.waiting_for["runbook"] == "cordon_node"
    assert _actions(container, incident_id) == [("cordon_node", "awaiting_approval")]
    [over] = _timeline(container, incident_id, "agent.hold_over")
    assert "fits the budgets now" in over
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None and incident.held_until is None and "budget_wait_since" not in incident.details


def test_a_budget_spent_on_someone_elses_cordon_goes_to_a_human_at_once(container: Container,
                                                                       tmp_path: Path) -> None:
    ctx, cluster = _context(container, tmp_path, T0 + 30)
    cluster.cordon(OTHER, reason="a human took it out for maintenance")  # no lease: not gpuops' to return
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 30)
    with graph_on(container) as graph:
        result = start(graph, ctx, incident_id)
    assert result.held is None and result.outcome == "escalated"
    assert "budget: 1 node(s) already out, limit 1" in result.reason
    assert _actions(container, incident_id) == [("cordon_node", "denied")]


def test_a_budget_still_spent_when_the_wait_ends_goes_to_a_human_naming_it(container: Container,
                                                                          tmp_path: Path) -> None:
    ctx, _, incident_id = _xid_while_own_node_out(container, tmp_path)
    with graph_on(container) as graph:
        assert start(graph, ctx, incident_id).held is not None
        late = T0 + 30 + ONE_NODE.budget_wait_s
        _examined(container, late)
        ctx.actions.deps.clock = lambda: late  # type: ignore[attr-defined]
        after = resume(graph, ctx, incident_id, {"hold": "over"})
    assert after.outcome == "escalated" and "budget: 1 node(s) already out, limit 1" in after.reason
    assert _actions(container, incident_id) == [("cordon_node", "denied")]
    [over] = _timeline(container, incident_id, "agent.hold_over")
    assert "waited 30 min" in over and "still spent" in over


def test_the_wait_turned_off_denies_at_once(container: Container, tmp_path: Path) -> None:
    ctx, _, incident_id = _xid_while_own_node_out(container, tmp_path,
                                                  ONE_NODE.model_copy(update={"budget_wait_s": 0.0}))
    with graph_on(container) as graph:
        result = start(graph, ctx, incident_id)
    assert result.held is None and result.outcome == "escalated" and "budget" in result.reason


def test_an_approved_action_the_budget_refuses_at_execution_waits_and_its_thread_resumes(container: Container,
                                                                                       tmp_path: Path) -> None:
    """The action fitted when proposed; before it ran, gpuops took another node out for another incident. The
    execution waits instead of handing the incident to a human: the thread pauses, the sweep resumes it at each
    recheck, and once gpuops' own node is back the approved action runs."""
    from tests.agent.helpers import approve

    ctx, cluster = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 30)
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        assert first.waiting_for is not None and first.waiting_for["runbook"] == "cordon_node"
        _own_node_out(container, cluster)  # another incident's remediation, between the proposal and its run
        approve(container, first.waiting_for["action_id"])
        waiting = resume(graph, ctx, incident_id)
        assert waiting.held is not None and waiting.outcome != "escalated"
        assert "waits for the budget" in waiting.held["reason"] and waiting.held["runbook"] == "cordon_node"
        assert _actions(container, incident_id) == [("cordon_node", "approved")]
        assert "cordon gpu-node-003" not in executed(tmp_path / "journal")

        _examined(container, T0 + 400)
        assert _due(container, T0 + 400) == [incident_id]
        ctx.actions.deps.clock = lambda: T0 + 400  # type: ignore[attr-defined]
        assert resume(graph, ctx, incident_id, {"hold": "over"}).held is not None  # still out: still waiting

        after = _return_own_node_and_resume(container, cluster, ctx, graph, incident_id)
    assert after.held is None and after.outcome != "escalated"
    assert _actions(container, incident_id)[0] == ("cordon_node", "succeeded")
    assert "cordon gpu-node-003" in executed(tmp_path / "journal")
    assert len(_timeline(container, incident_id, "agent.held")) == 1
    assert "fits the budgets now" in _timeline(container, incident_id, "agent.hold_over")[0]


def test_a_wait_over_while_another_executor_runs_the_action_waits_for_that_executor(container: Container,
                                                                                   tmp_path: Path) -> None:
    """The race the sweep's take-over opens: the resumed thread finds the budget still spent, and in the moment
    before it looks again gpuops' own node comes back and the sweep claims and runs the approved action. The
    thread must neither record the running action as done nor run it a second time: it waits for that executor,
    and records how the action ended once resumed."""
    import threading
    from dataclasses import replace

    from gpuops.execution.service import execute
    from tests.agent.helpers import approve

    ctx, cluster = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 30)
    started, release = threading.Event(), threading.Event()
    cordon = cluster.cordon

    def slow_cordon(node: str, **kwargs):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(30), "the test never let the sweep's cordon finish"
        return cordon(node, **kwargs)

    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        action_id = first.waiting_for["action_id"]  # type: ignore[index]
        _own_node_out(container, cluster)
        approve(container, action_id)
        assert resume(graph, ctx, incident_id).held is not None  # waits for the budget

        sweep = replace(ctx.actions.deps, worker="sweep")  # type: ignore[attr-defined]
        outcomes = []
        runner = threading.Thread(target=lambda: outcomes.append(
            execute(container.uow, action_id=action_id, deps=sweep, dry_run=False)))
        check = ctx.actions.execute

        def node_back_and_sweep_claims_after_the_first_check(**kwargs):  # type: ignore[no-untyped-def]
            view = check(**kwargs)
            if view.status == "waiting" and not runner.is_alive() and not outcomes:
                cluster.uncordon(OTHER)
                with container.uow() as uow:
                    release_node(uow.session, node=OTHER, now=datetime.fromtimestamp(T0 + 420, tz=UTC))
                    uow.commit()
                cluster.cordon = slow_cordon  # type: ignore[method-assign]
                runner.start()
                assert started.wait(30), "the sweep never started the cordon"
            return view

        ctx.actions.execute = node_back_and_sweep_claims_after_the_first_check  # type: ignore[method-assign]
        _examined(container, T0 + 400)
        ctx.actions.deps.clock = lambda: T0 + 400  # type: ignore[attr-defined]
        sweep.clock = lambda: T0 + 430  # type: ignore[attr-defined]
        try:
            during = resume(graph, ctx, incident_id, {"hold": "over"})  # the recheck, racing the sweep
            assert runner.is_alive() and during.outcome != "escalated" and during.held is None
            assert during.executing is not None and during.waiting_for is None
            assert _actions(container, incident_id) == [("cordon_node", "executing")]
        finally:
            release.set()
            runner.join(30)
        assert [o.status for o in outcomes] == ["succeeded"]
        ctx.actions.execute = check  # type: ignore[method-assign]
        after = resume(graph, ctx, incident_id)  # the sweep's executor resumes the thread once it is done
    assert after.outcome != "escalated", after.reason
    assert after.waiting_for is not None and after.waiting_for["runbook"] == "drain_node"  # the plan goes on
    assert executed(tmp_path / "journal").count("cordon gpu-node-003") == 1
    assert _actions(container, incident_id)[0] == ("cordon_node", "succeeded")
    with container.uow() as uow:
        claims = uow.session.scalars(select(AuditEvent.data).where(
            AuditEvent.action_id == action_id, AuditEvent.kind == "action.claimed")).all()
    assert [c["worker"] for c in claims] == ["sweep"]
