"""Policy: budgets across workers (database locks), cool-down, repeat offenders, rate limit, breaker,
freeze windows, scope, and the risk gate."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from gpuops.config import Settings
from gpuops.policy import (
    ActionSpec,
    FleetFacts,
    FreezeWindow,
    Gate,
    PolicyConfig,
    Verdict,
    budget_wait,
    evaluate,
    record_verification,
)
from gpuops.store import migrate
from gpuops.store.models import Action, FindingRecord, HardwareTicket, Incident, NodeLease
from gpuops.wiring import Container, bootstrap
from runbooks import default_catalogue

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FACTS = FleetFacts(nodes=20, gpus=160, healthy_gpus=160, gpus_per_node=8)


def make_incident(session: object, host: str | None, *, scope: str = "node", family: str = "ecc") -> Incident:
    inc = Incident(dedup_key=f"{host}//{family}", scope=scope, family=family, hostname=host, severity="critical",
                   title="t", opened_at=NOW, updated_at=NOW)
    session.add(inc)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return inc


def make_action(session: object, inc: Incident, runbook: str, target: str, key: str) -> Action:
    action = Action(incident_id=inc.id, runbook=runbook, targets=[target], plan_hash="h" * 64, idempotency_key=key,
                    status="approved")
    session.add(action)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return action


def drain(node: str, risk: str = "high") -> ActionSpec:
    return ActionSpec(runbook="drain_node", risk=risk, disruptive=True, auto_approvable=False,
                      target_keys=(f"node/{node}",), target_nodes=(node,))


def decide(container: Container, node: str, spec: ActionSpec, config: PolicyConfig, *, reserve: bool = True,
           facts: FleetFacts = FACTS, now: datetime = NOW, scope: str = "node") -> Verdict:
    with container.uow() as uow:
        inc = make_incident(uow.session, node if scope != "fleet" else None, scope=scope)
        action = make_action(uow.session, inc, spec.runbook, spec.target_keys[0], f"{node}-{spec.runbook}-{now}")
        verdict = evaluate(uow.session, incident=inc, action=action, spec=spec, facts=facts, config=config,
                           now=now, reserve=reserve)
        if verdict.allowed and reserve:
            action.executed_at, action.status = now, "succeeded"
        uow.commit()
        return verdict


def assert_decided(verdict: Verdict, gate: Gate, *rules: str) -> None:
    """The verdict's gate, and its reasons: one per rule that decided, in order, each starting with the rule's
    words (an allowed action's one reason names its risk)."""
    assert verdict.gate == gate, verdict.reasons
    assert len(verdict.reasons) == len(rules), verdict.reasons
    for reason, rule in zip(verdict.reasons, rules, strict=True):
        assert reason.startswith(rule), (reason, rule)


def test_budget_of_nodes_out_holds(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=2, max_nodes_out_fraction=0.5)
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, "gpu-node-002", drain("gpu-node-002"), config),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, "gpu-node-003", drain("gpu-node-003"), config),
                   Gate.DENIED, "budget: 2 node(s) already out, limit 2")


def test_nodes_cordoned_by_others_count_against_the_budget(container: Container) -> None:
    facts = FleetFacts(nodes=20, gpus=160, healthy_gpus=144, gpus_per_node=8,
                       unschedulable=frozenset({"gpu-node-009", "gpu-node-010"}))
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), PolicyConfig(), facts=facts),
                   Gate.DENIED, "budget: 2 node(s) already out, limit 2")


def test_minimum_healthy_gpus(container: Container) -> None:
    facts = FleetFacts(nodes=20, gpus=160, healthy_gpus=130, gpus_per_node=8)
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, min_healthy_gpu_fraction=0.8)
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config, facts=facts),
                   Gate.DENIED, "budget: 122 healthy GPUs would remain, minimum 128")


def test_a_small_fleet_may_still_take_one_node_out_but_not_two(container: Container) -> None:
    """Four 8-GPU nodes at the default 80 %: one node is a quarter of the fleet, so the floor alone would forbid
    every node action; like the nodes-out budget it lets one node go, and holds the second."""
    config = PolicyConfig()
    whole = FleetFacts(nodes=4, gpus=32, healthy_gpus=31, gpus_per_node=8, healthy_by_node={"gpu-node-001": 7})
    verdict = decide(container, "gpu-node-001", drain("gpu-node-001"), config, facts=whole, reserve=False)
    assert_decided(verdict, Gate.TWO_APPROVERS, "within budgets; high risk")
    assert verdict.budget is not None and verdict.budget.min_healthy_gpus == 24
    assert "less one node's GPUs" in dict(verdict.budget.describe())["Healthy GPUs after"]
    one_out = FleetFacts(nodes=4, gpus=32, healthy_gpus=24, gpus_per_node=8,
                         unschedulable=frozenset({"gpu-node-004"}))
    assert_decided(decide(container, "gpu-node-002", drain("gpu-node-002"), config, facts=one_out),
                   Gate.DENIED, "budget: 1 node(s) already out, limit 1", "budget: 16 healthy GPUs would remain, "
                   "minimum 24")
    forbidden = PolicyConfig(min_healthy_gpu_fraction=1.0)
    assert_decided(decide(container, "gpu-node-003", drain("gpu-node-003"), forbidden, facts=whole, reserve=False),
                   Gate.DENIED, "budget: 23 healthy GPUs would remain, minimum 32")


def test_risk_decides_the_gate(container: Container) -> None:
    config = PolicyConfig(auto_approve=frozenset({"notify_only", "cordon_node"}))
    notify = ActionSpec("notify_only", "low", False, True, ("node/gpu-node-001",), ("gpu-node-001",))
    cordon_low = ActionSpec("cordon_node", "low", True, True, ("node/gpu-node-002",), ("gpu-node-002",))
    reset = ActionSpec("reset_gpu", "medium", True, False, ("gpu/gpu-node-003/1",), ("gpu-node-003",))
    assert_decided(decide(container, "gpu-node-001", notify, config, reserve=False),
                   Gate.AUTO, "within budgets; low risk → auto")
    assert_decided(decide(container, "gpu-node-002", cordon_low, config, reserve=False),
                   Gate.AUTO, "within budgets; low risk → auto")
    assert_decided(decide(container, "gpu-node-003", reset, config, reserve=False),
                   Gate.ONE_APPROVER, "within budgets; medium risk → one_approver")
    not_listed = ActionSpec("taint_node", "low", False, True, ("node/gpu-node-004",), ("gpu-node-004",))
    assert_decided(decide(container, "gpu-node-004", not_listed, config, reserve=False),
                   Gate.ONE_APPROVER, "within budgets; low risk → one_approver")


def test_fleet_incident_escalates_instead_of_node_actions(container: Container) -> None:
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), PolicyConfig(), scope="fleet"),
                   Gate.ESCALATE, "node/gpu-node-001: fleet-wide incident")


def test_cool_down_and_repeat_offender(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, node_cooldown_s=3600, repeat_limit=2)
    node = "gpu-node-005"
    assert_decided(decide(container, node, drain(node), config), Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, node, drain(node), config, now=NOW + timedelta(minutes=10)),
                   Gate.DENIED, "cool-down: gpu-node-005 had action")
    assert_decided(decide(container, node, drain(node), config, now=NOW + timedelta(hours=2)),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, node, drain(node), config, now=NOW + timedelta(hours=4)),
                   Gate.ESCALATE, "repeat_limit: gpu-node-005 was remediated for 2 other incidents")


def test_a_node_just_returned_to_service_has_no_cool_down(container: Container) -> None:
    """The cool-down spaces disruptions of a node in service. Returning the node (its probation passed, or its
    repair came back) disrupts nothing: a fault there minutes later is acted on at once."""
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, node_cooldown_s=3600, repeat_limit=5)
    node = "gpu-node-007"
    uncordon = ActionSpec(runbook="uncordon_node", risk="low", disruptive=False, auto_approvable=True,
                          target_keys=(f"node/{node}",), target_nodes=(node,))
    assert decide(container, node, uncordon, config).allowed
    assert_decided(decide(container, node, drain(node), config, now=NOW + timedelta(minutes=10)),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, node, drain(node), config, now=NOW + timedelta(minutes=20)),
                   Gate.DENIED, "cool-down: gpu-node-007 had action")  # a drain is a disruption


def test_a_node_out_and_waiting_for_repair_has_no_cool_down(container: Container) -> None:
    """A second GPU failing on a node gpuops already drained and ticketed: the node serves nothing, so its
    incident's actions (amending the ticket) are not held back; a node back in service cools down as before."""
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, node_cooldown_s=3600, repeat_limit=5)
    node = "gpu-node-006"
    assert_decided(decide(container, node, drain(node), config), Gate.TWO_APPROVERS, "within budgets; high risk")
    with container.uow() as uow:
        uow.session.add(HardwareTicket(hostname=node, gpu=4, summary="SBE storm", status="open"))
        uow.commit()
    out = FleetFacts(nodes=20, gpus=160, healthy_gpus=152, gpus_per_node=8, unschedulable=frozenset({node}))
    later = NOW + timedelta(minutes=35)
    assert_decided(decide(container, node, drain(node), config, facts=out, now=later),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    # the same node back in service (uncordoned) with the ticket still open cools down as any other
    assert_decided(decide(container, node, drain(node), config, now=later + timedelta(minutes=5)),
                   Gate.DENIED, "cool-down: gpu-node-006 had action")


def test_a_ports_taint_takes_nothing_so_it_starts_no_cool_down(container: Container) -> None:
    """The taint that keeps new work across nodes off a port waiting for repair stops nothing on the node: a
    remediation of another fault there right after it is not held back, as it is after a cordon."""
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, node_cooldown_s=3600, repeat_limit=5)
    catalogue = default_catalogue()
    for runbook, node, gate in (("taint_port", "gpu-node-007", Gate.TWO_APPROVERS),
                                ("cordon_node", "gpu-node-008", Gate.DENIED)):
        spec = ActionSpec(runbook=runbook, risk="low", disruptive=catalogue.get(runbook).disruptive,
                          auto_approvable=True, target_keys=(f"node/{node}",), target_nodes=(node,))
        assert decide(container, node, spec, config).allowed
        verdict = decide(container, node, drain(node), config, now=NOW + timedelta(minutes=5))
        assert verdict.gate == gate, (runbook, verdict.reasons)


def test_fleet_rate_limit(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, max_actions_per_hour=2)
    verdicts = [decide(container, f"gpu-node-{n:03d}", drain(f"gpu-node-{n:03d}"), config) for n in range(1, 4)]
    assert [v.gate for v in verdicts] == [Gate.TWO_APPROVERS, Gate.TWO_APPROVERS, Gate.DENIED]
    assert_decided(verdicts[2], Gate.DENIED, "rate limit: 2 actions in the last hour, limit 2")


def test_notifications_are_never_rationed_and_do_not_spend_the_rate_limit(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=20, max_nodes_out_fraction=1.0, max_actions_per_hour=1,
                          auto_approve=frozenset({"notify_only"}))
    notify = ActionSpec("notify_only", "low", False, True, ("none",), ())
    for n in range(1, 4):
        with container.uow() as uow:
            inc = make_incident(uow.session, f"gpu-node-{n:03d}")
            action = make_action(uow.session, inc, "notify_only", "none", f"notify-{n}")
            verdict = evaluate(uow.session, incident=inc, action=action, spec=notify, facts=FACTS, config=config,
                               now=NOW)
            assert verdict.gate == Gate.AUTO, verdict.reasons
            action.executed_at, action.status = NOW, "succeeded"
            uow.commit()
    assert decide(container, "gpu-node-009", drain("gpu-node-009"), config).gate == Gate.TWO_APPROVERS


def test_freeze_window_blocks_disruptive_actions(container: Container) -> None:
    config = PolicyConfig(freeze_windows=(FreezeWindow(starts_at=NOW - timedelta(hours=1),
                                                       ends_at=NOW + timedelta(hours=1), reason="launch"),))
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config), Gate.DENIED, "freeze window until")
    notify = ActionSpec("notify_only", "low", False, True, ("node/gpu-node-002",), ("gpu-node-002",))
    assert_decided(decide(container, "gpu-node-002", notify, config, reserve=False),
                   Gate.AUTO, "within budgets; low risk → auto")


def test_target_outside_the_incident_is_denied(container: Container) -> None:
    with container.uow() as uow:
        inc = make_incident(uow.session, "gpu-node-001")
        action = make_action(uow.session, inc, "drain_node", "node/gpu-node-002", "k")
        verdict = evaluate(uow.session, incident=inc, action=action, spec=drain("gpu-node-002"), facts=FACTS,
                           config=PolicyConfig(), now=NOW)
    assert_decided(verdict, Gate.DENIED, f"node/gpu-node-002: incident {inc.id} is on gpu-node-001")


def test_circuit_breaker_stops_automation_after_failed_verifications(container: Container) -> None:
    config = PolicyConfig(breaker_failures=2, max_nodes_out=20, max_nodes_out_fraction=1.0)
    with container.uow() as uow:
        inc = make_incident(uow.session, "gpu-node-001")
        opened = []
        for i in range(2):
            action = make_action(uow.session, inc, "reset_gpu", "gpu/gpu-node-001/0", f"f{i}")
            action.status, action.verified_at = "failed", NOW
            uow.flush()
            opened.append(record_verification(uow.session, action=action, ok=False, config=config, now=NOW))
        uow.commit()
    assert opened == [False, True]
    assert_decided(decide(container, "gpu-node-009", drain("gpu-node-009"), config),
                   Gate.ESCALATE, "circuit breaker open since")


def _race(url: str, node: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:  # type: ignore[type-arg]
    container = bootstrap(Settings(database_url=url))
    config = PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=1.0)
    with container.uow() as uow:
        inc = make_incident(uow.session, node)
        action = make_action(uow.session, inc, "drain_node", f"node/{node}", f"race-{node}")
        uow.commit()
    with container.uow() as uow:
        inc = uow.session.get(Incident, inc.id)
        action = uow.session.get(Action, action.id)
        assert inc is not None and action is not None
        barrier.wait(timeout=30)
        verdict = evaluate(uow.session, incident=inc, action=action, spec=drain(node), facts=FACTS, config=config,
                           now=NOW, reserve=True)
        uow.commit()
    results.put((node, verdict.allowed))
    container.close()


def test_two_processes_racing_for_the_last_budget_slot_exactly_one_wins(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(postgres_url, n, barrier, results)) for n in ("gpu-node-001",
                                                                                          "gpu-node-002")]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(outcomes.values()) == [False, True]
    container = bootstrap(Settings(database_url=postgres_url))
    with container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(NodeLease)) == 1
    container.close()


def test_gpuops_holds_a_not_ready_node_it_takes_out_so_a_budget_spent_on_it_is_waited_for(
        container: Container) -> None:
    """A node already out (NotReady) that gpuops cordons and drains is gpuops' to return after its probation:
    it takes a lease there, so another node action refused only for it waits instead of going to a human. A
    node someone else cordoned stays theirs: no lease, and nothing to wait for."""
    config = PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=0.5)
    down = FleetFacts(nodes=20, gpus=160, healthy_gpus=152, gpus_per_node=8, unschedulable=frozenset({"gpu-node-003"}))
    assert decide(container, "gpu-node-003", drain("gpu-node-003"), config, facts=down).allowed
    with container.uow() as uow:
        assert list(uow.session.scalars(select(NodeLease.hostname))) == ["gpu-node-003"]
        waits = budget_wait(uow.session, spec=drain("gpu-node-001"), facts=down, config=config)
    assert waits is not None and "gpuops' own gpu-node-003 come(s) back" in waits, waits

    theirs = FleetFacts(nodes=20, gpus=160, healthy_gpus=152, gpus_per_node=8,
                        unschedulable=frozenset({"gpu-node-003", "gpu-node-004"}),
                        cordoned_by_others=frozenset({"gpu-node-004"}))
    assert decide(container, "gpu-node-004", drain("gpu-node-004"), config, facts=theirs).allowed
    with container.uow() as uow:
        assert list(uow.session.scalars(select(NodeLease.hostname))) == ["gpu-node-003"]
        assert budget_wait(uow.session, spec=drain("gpu-node-001"), facts=theirs, config=config) is None


def test_a_zero_fraction_forbids_node_actions(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=3, max_nodes_out_fraction=0.0)
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config),
                   Gate.DENIED, "budget: 0 node(s) already out, limit 0")


@pytest.mark.parametrize(("fraction", "nodes", "limit"), [(0.04, 8, 1), (0.10, 8, 1), (0.10, 40, 3), (0.5, 40, 3)])
def test_a_fraction_below_one_node_still_allows_one(fraction: float, nodes: int, limit: int) -> None:
    assert PolicyConfig(max_nodes_out=3, max_nodes_out_fraction=fraction).nodes_out_limit(nodes) == limit


def isolate(node: str, gpu: int, taken: int) -> ActionSpec:
    return ActionSpec(runbook="isolate_gpu", risk="medium", disruptive=True, auto_approvable=False,
                      target_keys=(f"gpu/{node}/{gpu}",), target_nodes=(node,), gpus_taken={node: taken})


def test_an_action_that_takes_only_its_gpu_spends_the_floor_by_what_it_takes(container: Container) -> None:
    """24 GPUs, one withheld: draining a 4-GPU node breaks the floor of 20; isolating one GPU of it, with one more
    free GPU the cordon keeps from new pods meanwhile, takes two and fits. It takes no node out of service, so the
    nodes-out budget never refuses it; its lease, held while it runs, counts as a node out for every other
    action meanwhile."""
    facts = FleetFacts(nodes=6, gpus=24, healthy_gpus=23, gpus_per_node=4, healthy_by_node={"gpu-node-002": 3})
    config = PolicyConfig()
    assert_decided(decide(container, "gpu-node-005", drain("gpu-node-005"), config, facts=facts, reserve=False),
                   Gate.DENIED, "budget: 19 healthy GPUs would remain, minimum 20")
    verdict = decide(container, "gpu-node-005", isolate("gpu-node-005", 0, 2), config, facts=facts)
    assert_decided(verdict, Gate.ONE_APPROVER, "within budgets; medium risk")
    assert verdict.budget.healthy_gpus_after == 21 and verdict.budget.nodes_out_after == 0
    # a GPU-only action never takes more than the node has in service
    assert isolate("gpu-node-002", 1, 9).taken_from(facts, ["gpu-node-002"]) == 3
    # gpu-node-005's lease spends the nodes-out budget of one: draining gpu-node-002 (3 healthy GPUs, so the floor
    # holds) is refused, a second GPU-only action is not
    assert_decided(decide(container, "gpu-node-002", drain("gpu-node-002"), config, facts=facts, reserve=False),
                   Gate.DENIED, "budget: 1 node(s) already out, limit 1")
    second = decide(container, "gpu-node-006", isolate("gpu-node-006", 1, 1), config, facts=facts, reserve=False)
    assert_decided(second, Gate.ONE_APPROVER, "within budgets; medium risk")
    assert (second.budget.nodes_out, second.budget.nodes_out_after, second.budget.healthy_gpus_after) == (1, 1, 22)
    # the floor still weighs it: four GPUs taken from a node of four would leave 19
    assert_decided(decide(container, "gpu-node-004", isolate("gpu-node-004", 1, 4), config, facts=facts,
                          reserve=False),
                   Gate.DENIED, "budget: 19 healthy GPUs would remain, minimum 20")
    assert_decided(decide(container, "gpu-node-003", isolate("gpu-node-003", 1, 1), PolicyConfig(fence_gpus=False),
                          facts=facts, reserve=False),
                   Gate.DENIED, "isolate_gpu fences a GPU off, and fences are off")
    # people cordoned two more nodes: the budget is over its limit, and still a GPU-only action adds no node to it
    crowded = FleetFacts(nodes=6, gpus=24, healthy_gpus=23, gpus_per_node=4, healthy_by_node={"gpu-node-002": 3},
                         unschedulable=frozenset({"gpu-node-001", "gpu-node-002"}),
                         cordoned_by_others=frozenset({"gpu-node-001", "gpu-node-002"}))
    third = decide(container, "gpu-node-004", isolate("gpu-node-004", 0, 1), config, facts=crowded, reserve=False,
                   now=NOW + timedelta(minutes=1))
    assert_decided(third, Gate.ONE_APPROVER, "within budgets; medium risk")
    assert (third.budget.nodes_out, third.budget.nodes_out_after, third.budget.nodes_out_limit) == (3, 3, 1)


def test_a_small_fleet_takes_one_node_out_and_no_second(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=3, max_nodes_out_fraction=0.04)
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    assert_decided(decide(container, "gpu-node-002", drain("gpu-node-002"), config),
                   Gate.DENIED, "budget: 1 node(s) already out, limit 1")


def _finding(session: object, host: str, kind: str, at: datetime) -> None:
    session.add(FindingRecord(ts=at, hostname=host, gpu=0, uuid=None, kind=kind, severity="critical",  # type: ignore[attr-defined]
                              score=1.0, predicted_failure_at=None, detector="rules.xid", evidence={}))


def test_the_same_family_on_another_node_sends_node_actions_to_a_human(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        _finding(uow.session, "gpu-node-001", "ecc", NOW - timedelta(seconds=60))   # the incident's own node
        _finding(uow.session, "gpu-node-007", "thermal", NOW - timedelta(seconds=60))  # another family
        _finding(uow.session, "gpu-node-008", "ecc", NOW - timedelta(seconds=3600))  # outside the window
        uow.commit()
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    with container.uow() as uow:
        _finding(uow.session, "gpu-node-002", "ecc", NOW - timedelta(seconds=120))  # a rollout's next node
        uow.commit()
    assert_decided(decide(container, "gpu-node-003", drain("gpu-node-003"), config),
                   Gate.ESCALATE, "common cause suspected: ecc also on gpu-node-001, gpu-node-002")
    off = config.model_copy(update={"common_cause_window_s": 0})
    assert_decided(decide(container, "gpu-node-004", drain("gpu-node-004"), off),
                   Gate.TWO_APPROVERS, "within budgets; high risk")


def _history(session: object, family: str, count: int, days: float, *, folded_into: Incident | None = None,
             status: str = "resolved") -> None:
    """`count` incidents of `family`, one node each, opened evenly over the `days` before the hold's window."""
    for i in range(count):
        at = NOW - timedelta(seconds=900) - timedelta(days=days) * (i + 0.5) / count
        session.add(Incident(dedup_key=f"old-{family}-{status}-{i}", scope="node", family=family,  # type: ignore[attr-defined]
                             hostname=f"gpu-node-{100 + i % 50:03d}", severity="critical", title="t", opened_at=at,
                             updated_at=at, status=status, parent_id=None if folded_into is None
                             else folded_into.id))


def test_on_a_fleet_where_a_family_is_common_only_more_than_chance_holds(container: Container) -> None:
    """On a large fleet faults of one family meet within the window by chance. With 60 ECC incidents in the last
    30 days (two a day), another node's within 900 s happens by chance 2 % of the time, so one does not hold a
    node action; two (0.02 %) do. Incidents a fleet event folded in (a rollout) are no such rate."""
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        _history(uow.session, "ecc", 60, 30)
        _history(uow.session, "thermal", 60, 30)
        _finding(uow.session, "gpu-node-002", "ecc", NOW - timedelta(seconds=120))
        _finding(uow.session, "gpu-node-005", "thermal", NOW - timedelta(seconds=120))
        uow.commit()
    assert_decided(decide(container, "gpu-node-001", drain("gpu-node-001"), config),
                   Gate.TWO_APPROVERS, "within budgets; high risk")
    with container.uow() as uow:
        _finding(uow.session, "gpu-node-003", "ecc", NOW - timedelta(seconds=60))
        uow.commit()
    verdict = decide(container, "gpu-node-004", drain("gpu-node-004"), config)
    assert_decided(verdict, Gate.ESCALATE, "common cause suspected: ecc also on gpu-node-002, gpu-node-003")
    assert "60 ecc incident(s) in 30 days" in verdict.reasons[0]
    # a baseline so long that the same history is a rare family: one other node holds again
    rare = config.model_copy(update={"common_cause_baseline_s": 365 * 86400.0})
    with container.uow() as uow:
        here = make_incident(uow.session, "gpu-node-006", family="thermal")
        action = make_action(uow.session, here, "drain_node", "node/gpu-node-006", "rare-1")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-006"), facts=FACTS,
                           config=rare, now=NOW)
        assert_decided(verdict, Gate.ESCALATE, "common cause suspected: thermal also on gpu-node-005")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-006"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.TWO_APPROVERS, "within budgets; high risk")


def test_a_rollout_folded_into_a_fleet_event_is_no_rate_of_chance(container: Container) -> None:
    """Node incidents a fleet event took in (a rollout's), and suppressed ones, are no rate of independent faults:
    with only those in its history, the family holds on one other node."""
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        fleet = make_incident(uow.session, None, scope="fleet", family="xid")
        _history(uow.session, "xid", 60, 2, folded_into=fleet)
        _history(uow.session, "xid", 60, 20, status="suppressed")
        _finding(uow.session, "gpu-node-002", "xid", NOW - timedelta(seconds=120))
        here = make_incident(uow.session, "gpu-node-001", family="xid")
        action = make_action(uow.session, here, "drain_node", "node/gpu-node-001", "folded-1")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-001"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.ESCALATE, "common cause suspected: xid also on gpu-node-002")
        assert "no other xid incident in the 30 days before, so no rate of chance" in verdict.reasons[0]


def _soft(session: object, host: str, kind: str, at: datetime, *, corroborated: bool) -> None:
    session.add(FindingRecord(ts=at, hostname=host, gpu=0, uuid=None, kind=kind, severity="warning",  # type: ignore[attr-defined]
                              score=0.6, predicted_failure_at=None, detector="univariate",
                              evidence={"corroborated": corroborated}))


def test_a_suspicion_elsewhere_never_holds_a_fact(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        _soft(uow.session, "gpu-node-002", "thermal", NOW - timedelta(seconds=60), corroborated=True)
        _soft(uow.session, "gpu-node-003", "thermal", NOW - timedelta(seconds=60), corroborated=False)
        here = make_incident(uow.session, "gpu-node-001", family="thermal")  # critical: a GPU at shutdown
        action = make_action(uow.session, here, "drain_node", "node/gpu-node-001", "fact-1")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-001"), facts=FACTS,
                           config=config, now=NOW)
    # the incident is a fact: soft findings of its family on other nodes are no common cause
    assert_decided(verdict, Gate.TWO_APPROVERS, "within budgets; high risk")


def test_a_soft_incident_is_held_only_by_corroborated_incidents_elsewhere(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        here = make_incident(uow.session, "gpu-node-001", family="thermal")
        here.severity = "warning"
        lone = make_incident(uow.session, "gpu-node-002", family="thermal")
        _soft(uow.session, "gpu-node-002", "thermal", NOW - timedelta(seconds=60), corroborated=False)
        _soft(uow.session, "gpu-node-004", "thermal", NOW - timedelta(seconds=60), corroborated=True)  # no incident
        uow.session.flush()
        for record in uow.session.scalars(select(FindingRecord).where(FindingRecord.hostname == "gpu-node-002")):
            record.incident_id = lone.id
        action = make_action(uow.session, here, "drain_node", "node/gpu-node-001", "soft-1")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-001"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.TWO_APPROVERS, "within budgets; high risk")
        agreed = make_incident(uow.session, "gpu-node-005", family="thermal")
        _soft(uow.session, "gpu-node-005", "thermal", NOW - timedelta(seconds=30), corroborated=True)
        uow.session.flush()
        for record in uow.session.scalars(select(FindingRecord).where(FindingRecord.hostname == "gpu-node-005")):
            record.incident_id = agreed.id
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-001"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.ESCALATE, "common cause suspected: thermal also on gpu-node-005")


def test_a_node_kept_out_for_repair_no_longer_holds_the_nodes_out_budget(container: Container) -> None:
    from gpuops.store.models import NodeProbation

    config = PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=1.0)
    assert decide(container, "gpu-node-001", drain("gpu-node-001"), config).gate == Gate.TWO_APPROVERS
    facts = FleetFacts(nodes=20, gpus=160, healthy_gpus=152, gpus_per_node=8, unschedulable=frozenset({"gpu-node-001"}))
    assert_decided(decide(container, "gpu-node-002", drain("gpu-node-002"), config, facts=facts),
                   Gate.DENIED, "budget: 1 node(s) already out, limit 1")
    with container.uow() as uow:  # its probation failed: a double-bit error, a ticket, out until repaired
        inc = uow.session.scalars(select(Incident).where(Incident.hostname == "gpu-node-001")).first()
        assert inc is not None
        uow.session.add(NodeProbation(hostname="gpu-node-001", incident_id=inc.id, status="kept_out",
                                      started_at=NOW, due_at=NOW, checks=[], reason="dbe"))
        uow.commit()
    assert decide(container, "gpu-node-003", drain("gpu-node-003"), config, facts=facts).gate == Gate.TWO_APPROVERS


def _link(session: object, host: str, device: str, at: datetime, incident: Incident | None = None) -> None:
    session.add(FindingRecord(ts=at, hostname=host, gpu=None, uuid=None, kind="fabric", severity="critical",  # type: ignore[attr-defined]
                              score=1.0, predicted_failure_at=None, detector="fabric",
                              evidence={"condition": "link_down", "device": device, "port": 1},
                              incident_id=None if incident is None else incident.id))


def test_a_fabric_fault_elsewhere_is_a_common_cause_only_on_the_same_rail(container: Container) -> None:
    config = PolicyConfig(max_nodes_out=5, max_nodes_out_fraction=1.0, common_cause_window_s=900)
    with container.uow() as uow:
        here = make_incident(uow.session, "gpu-node-004", family="fabric")
        _link(uow.session, "gpu-node-004", "mlx5_1", NOW - timedelta(seconds=30), here)
        _link(uow.session, "gpu-node-002", "mlx5_3", NOW - timedelta(seconds=600))  # another cable, another rail
        uow.session.flush()
        action = make_action(uow.session, here, "drain_node", "node/gpu-node-004", "rail-1")
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-004"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.TWO_APPROVERS, "within budgets; high risk")
        _link(uow.session, "gpu-node-009", "mlx5_1", NOW - timedelta(seconds=300))  # the same rail's switch
        uow.session.flush()
        verdict = evaluate(uow.session, incident=here, action=action, spec=drain("gpu-node-004"), facts=FACTS,
                           config=config, now=NOW)
        assert_decided(verdict, Gate.ESCALATE, "common cause suspected: fabric also on gpu-node-009")


def _restart(container: Container, job: str, now: datetime, config: PolicyConfig) -> Verdict:
    """A hung-job incident of `job` and its proposed restart (its worker-0 on gpu-node-001), decided at `now`."""
    pod = f"pod/{job}-worker-0"
    spec = ActionSpec(runbook="restart_pod", risk="low", disruptive=True, auto_approvable=True, target_keys=(pod,),
                      target_nodes=(), pod_nodes={pod: "gpu-node-001"})
    with container.uow() as uow:
        inc = make_incident(uow.session, "gpu-node-001", family="hung_job")
        inc.details = {"job": job}
        action = make_action(uow.session, inc, "restart_pod", pod, f"{job}-{now}")
        verdict = evaluate(uow.session, incident=inc, action=action, spec=spec, facts=FACTS, config=config, now=now)
        if verdict.allowed:
            action.executed_at, action.status = now, "succeeded"
        uow.commit()
        return verdict


def test_a_job_that_stalls_again_after_each_restart_goes_to_a_human(container: Container) -> None:
    config = PolicyConfig(auto_approve=frozenset({"restart_pod"}), job_restart_limit=2, job_restart_window_s=6 * 3600)
    job = "training/pretrain"
    for k in range(2):
        assert_decided(_restart(container, job, NOW + timedelta(minutes=30 * k), config), Gate.AUTO, "within budgets")
    third = _restart(container, job, NOW + timedelta(minutes=60), config)
    assert_decided(third, Gate.ESCALATE, "job_restarts: gpuops restarted training/pretrain for 2 other incidents")
    assert "stalled again" in third.reasons[0]
    # Another job's restart is its own; and once the window has passed, a new stall is a new story.
    assert_decided(_restart(container, "training/sft", NOW + timedelta(minutes=61), config), Gate.AUTO, "within")
    assert_decided(_restart(container, job, NOW + timedelta(hours=7), config), Gate.AUTO, "within budgets")
