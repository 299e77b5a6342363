"""drain_node and cordon/uncordon through the real `kubernetes` client against the twin over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.annotations import CHECKPOINT_DONE, CHECKPOINT_REQUESTED, CORDONED_BY
from runbooks import Catalogue, Plan, Risk, StepResult, Target, default_catalogue
from runbooks.errors import RunbookError
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION, KubeEvent
from tests.runbook_twin import FAST, Twin, bare_pod, connected, context, daemonset, deployment, pdb, running

N1, N2 = "gpu-node-001", "gpu-node-002"


@pytest.fixture
def twin() -> Iterator[Twin]:
    with running(Twin().start()) as twin:
        twin.state.add_node(N1, 8)
        yield twin


@pytest.fixture
def cluster(twin: Twin) -> Iterator[KubernetesCluster]:
    with connected(twin) as cluster:
        yield cluster


@pytest.fixture
def catalogue() -> Catalogue:
    return default_catalogue(FAST)


def drain(node: str = N1, **params: object) -> Plan:
    return Plan("drain_node", dict(params), (Target.for_node(node),))


def cordoned_by_someone_else(twin: Twin, node: str) -> None:
    twin.state.update_object("nodes", "", node, lambda n: {**n, "spec": {**n["spec"], "unschedulable": True}})


# ------------------------------------------------------------------ cordon / uncordon


def test_cordon_then_uncordon_only_what_gpuops_cordoned(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    ctx = context(twin, cluster)
    node = (Target.for_node(N1),)
    assert catalogue.execute(Plan("cordon_node", {"reason": "xid 79"}, node), ctx).ok
    stored = twin.state.get_node(N1)
    assert stored["spec"]["unschedulable"] is True and stored["metadata"]["annotations"][CORDONED_BY] == "gpuops"
    assert catalogue.verify(Plan("cordon_node", {}, node), ctx).ok
    uncordon = Plan("uncordon_node", {}, node)
    assert catalogue.preconditions(uncordon, ctx) == []
    assert catalogue.execute(uncordon, ctx).ok and catalogue.verify(uncordon, ctx).ok
    assert twin.state.node_schedulable(N1)
    assert CORDONED_BY not in twin.state.get_node(N1)["metadata"]["annotations"]


def test_a_node_returns_under_gpuops_taint_and_the_taint_is_lifted_alone(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    """A node whose InfiniBand port waits for repair returns under gpuops.io/fabric-degraded: the taint is on
    before the cordon is lifted; later only that taint of gpuops' is lifted, an operator's own stays."""
    ctx = context(twin, cluster)
    node = (Target.for_node(N1),)
    twin.state.update_object("nodes", "", N1, lambda n: {**n, "spec": {**n["spec"], "taints": [
        {"key": "example.com/reserved", "value": "ml", "effect": "NoSchedule"}]}})
    assert catalogue.execute(Plan("cordon_node", {}, node), ctx).ok
    back = Plan("uncordon_node", {"taint_key": "gpuops.io/fabric-degraded", "taint_value": "mlx5_3"}, node)
    assert "taint gpu-node-001 gpuops.io/fabric-degraded=mlx5_3:NoSchedule" in catalogue.dry_run(back, ctx).changes
    assert catalogue.execute(back, ctx).ok and catalogue.verify(back, ctx).ok
    assert twin.state.node_schedulable(N1)
    taints = {(t["key"], t.get("value", ""), t["effect"]) for t in twin.state.get_node(N1)["spec"]["taints"]}
    assert taints == {("example.com/reserved", "ml", "NoSchedule"),
                      ("gpuops.io/fabric-degraded", "mlx5_3", "NoSchedule")}

    lift = Plan("untaint_node", {"key": "gpuops.io/fabric-degraded"}, node)
    assert catalogue.preconditions(lift, ctx) == []
    assert catalogue.execute(lift, ctx).ok and catalogue.verify(lift, ctx).ok
    assert [t["key"] for t in twin.state.get_node(N1)["spec"]["taints"]] == ["example.com/reserved"]
    assert "has no taint gpuops.io/fabric-degraded" in catalogue.preconditions(lift, ctx)[0]
    with pytest.raises(RunbookError, match="key"):  # never an operator's taint
        catalogue.preconditions(Plan("untaint_node", {"key": "example.com/reserved"}, node), ctx)


def test_a_node_cordoned_by_someone_else_is_never_uncordoned(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    cordoned_by_someone_else(twin, N1)
    ctx = context(twin, cluster)
    node = (Target.for_node(N1),)
    uncordon = Plan("uncordon_node", {}, node)
    (problem,) = catalogue.preconditions(uncordon, ctx)
    assert "cordoned by someone else" in problem
    refused = catalogue.execute(uncordon, ctx)
    assert not refused.ok and "cordoned by someone else" in refused.detail
    # gpuops' own cordon on top does not claim the node, so neither its rollback nor a drain's uncordons it
    cordon = Plan("cordon_node", {}, node)
    assert "someone else" in catalogue.execute(cordon, ctx).detail
    for plan in (cordon, drain()):
        rolled = catalogue.rollback(plan, ctx)
        assert rolled is not None and rolled.ok and "left cordoned: someone else cordoned it" in rolled.detail
    # and the executing step refuses even when the precondition is skipped (the node changed meanwhile)
    step = catalogue.runbook("uncordon_node").steps[0]
    direct = step.fn(catalogue.validate(uncordon), catalogue.get("uncordon_node").params_model(), ctx)
    assert isinstance(direct, StepResult) and not direct.ok
    assert not twin.state.node_schedulable(N1)
    assert CORDONED_BY not in twin.state.get_node(N1)["metadata"]["annotations"]


# ------------------------------------------------------------------ PodDisruptionBudgets


def two_replicas_behind_a_budget(twin: Twin) -> None:
    """Both replicas on N1 (added before N2 exists); the budget lets only one be down at a time."""
    twin.state.add_deployment(deployment("serve", 2, 4))
    twin.state.add_pdb(pdb("serve", minAvailable=1))
    twin.state.add_node(N2, 8)
    assert len(twin.pods(N1, "ml")) == 2


def test_drain_blocked_by_a_budget_retries_until_a_replacement_is_ready(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    two_replicas_behind_a_budget(twin)
    before = twin.pod_names(N1, "ml")
    steps: list[tuple[str, StepResult]] = []
    ctx = context(twin, cluster, steps=steps)
    result = catalogue.execute(drain(), ctx)
    assert result.ok, result.detail
    evict = dict(steps)["evict"]
    assert len(evict.data["retried"]) == 1 and "retried 1 blocked" in evict.detail
    assert twin.pods(N1, "ml") == [] and not twin.state.node_schedulable(N1)
    after = twin.pods(N2, "ml")
    assert len(after) == 2 and not before & twin.pod_names(N2, "ml")
    assert twin.slept >= 5  # the second eviction waited for the replacement to start
    assert catalogue.verify(drain(), ctx).ok
    assert [name for name, _ in steps] == [
        "preconditions",
        "cordon_node",
        "checkpoint",
        "evict",
        "wait_empty",
        "verify",
    ]


def test_drain_blocked_past_its_deadline_fails_cleanly_and_leaves_the_node_cordoned(
    twin: Twin, cluster: KubernetesCluster
) -> None:
    two_replicas_behind_a_budget(twin)
    cordoned_by_someone_else(twin, N2)  # no room for a replacement: the budget never allows the second eviction
    catalogue = default_catalogue(FAST.model_copy(update={"drain_timeout_s": 60}))
    ctx = context(twin, cluster)  # carries FAST (120s); the catalogue's settings apply
    start = twin.clock()
    result = catalogue.execute(drain(), ctx)
    assert not result.ok and result.data["failed_step"] == "evict"
    assert "still blocked by a PodDisruptionBudget after 60s" in result.detail
    assert f"{N1} is left cordoned" in result.detail
    assert 60 <= twin.clock() - start <= 70
    assert len(result.data["blocked"]) == 1 and len(twin.pods(N1, "ml")) == 1
    assert not twin.state.node_schedulable(N1)
    assert twin.state.get_node(N1)["metadata"]["annotations"][CORDONED_BY] == "gpuops"
    rolled = catalogue.rollback(drain(), ctx)
    assert rolled is not None and rolled.ok and twin.state.node_schedulable(N1)


# ------------------------------------------------------------------ DaemonSets, unmanaged pods, emptyDir


def test_drain_skips_daemonset_pods_and_refuses_unmanaged_pods_unless_forced(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_daemonset(daemonset("dcgm-exporter"))
    twin.state.add_deployment(deployment("serve", 1, 2))
    twin.state.add_pod(bare_pod("debug", N1, gpus=[7]))
    twin.state.add_node(N2, 8)
    ctx = context(twin, cluster)
    (problem,) = catalogue.preconditions(drain(), ctx)
    assert "tools/debug is not managed by a controller" in problem and "force=true" in problem
    refused = catalogue.execute(drain(), ctx)
    assert not refused.ok and refused.data["failed_step"] == "preconditions"
    assert twin.state.node_schedulable(N1) and "tools/debug" in twin.pod_names(N1)

    assert catalogue.execute(drain(force=True), ctx).ok
    left = twin.pod_names(N1)
    assert len(left) == 1 and next(iter(left)).startswith("gpu-operator/dcgm-exporter")
    assert "tools/debug" not in twin.pod_names()  # an unmanaged pod is gone for good, as with kubectl --force
    assert len(twin.pods(N2, "ml")) == 1
    assert catalogue.verify(drain(force=True), ctx).ok


def test_drain_refuses_emptydir_pods_unless_asked(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    dep = deployment("cache", 1, 0)
    dep["spec"]["template"]["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    twin.state.add_deployment(dep)
    ctx = context(twin, cluster)
    (problem,) = catalogue.preconditions(drain(), ctx)
    assert "emptyDir" in problem and "delete_emptydir_data=true" in problem
    assert catalogue.preconditions(drain(delete_emptydir_data=True), ctx) == []


# ------------------------------------------------------------------ checkpoints


def test_training_pods_checkpoint_before_they_are_evicted(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("train", 1, 8, **{CHECKPOINT_SECONDS_ANNOTATION: "45"}))
    twin.state.add_node(N2, 8)
    (pod,) = twin.pods(N1, "ml")
    name = pod["metadata"]["name"]
    stopped: list[tuple[float, KubeEvent]] = []
    twin.state.subscribe(lambda e: stopped.append((twin.clock(), e)) if e.kind == "pod_stopped" else None)
    ctx = context(twin, cluster)
    assert catalogue.risk_for(drain(), ctx) is Risk.HIGH
    start = twin.clock()
    result = catalogue.execute(drain(), ctx)
    assert result.ok, result.detail
    assert result.data["checkpointed"] == [f"ml/{name}"]
    ((at, event),) = stopped
    assert event.pod == name and at - start >= 45  # evicted only after the job confirmed its checkpoint
    replacement = twin.pods(N2, "ml")
    assert len(replacement) == 1


def test_a_checkpoint_that_does_not_come_in_time_stops_the_drain(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("train", 1, 8, **{CHECKPOINT_SECONDS_ANNOTATION: "500"}))
    ctx = context(twin, cluster)
    start = twin.clock()
    result = catalogue.execute(drain(checkpoint_deadline_s=30), ctx)
    assert not result.ok and result.data["failed_step"] == "checkpoint"
    assert "no checkpoint from ml/train-" in result.detail and "nothing was evicted" in result.detail
    assert "left cordoned" in result.detail
    assert 30 <= twin.clock() - start <= 35
    (pod,) = twin.pods(N1, "ml")
    notes = pod["metadata"]["annotations"]
    assert CHECKPOINT_REQUESTED in notes and CHECKPOINT_DONE not in notes
    assert "deletionTimestamp" not in pod["metadata"] and not twin.state.node_schedulable(N1)


# ------------------------------------------------------------------ dry runs


def test_dry_run_changes_nothing_and_lists_evictions_and_gpu_hours(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_daemonset(daemonset("dcgm-exporter"))
    twin.state.add_deployment(deployment("train", 1, 4, **{CHECKPOINT_SECONDS_ANNOTATION: "45"}))
    twin.state.add_deployment(deployment("batch", 1, 2))
    twin.state.add_pdb(pdb("train", minAvailable=1))
    ctx = context(twin, cluster)
    before = twin.snapshot()
    diff = catalogue.dry_run(drain(), ctx)
    assert twin.snapshot() == before and twin.slept == 0
    train = next(p for p in twin.pod_names(N1, "ml") if "train" in p)
    batch = next(p for p in twin.pod_names(N1, "ml") if "batch" in p)
    assert sorted(diff.pods_affected) == sorted([train, batch])
    assert diff.changes[0] == f"cordon {N1}"
    assert f"ask {train} to checkpoint (waits up to 60s)" in diff.changes
    assert f"evict {train}, 4 GPUs" in diff.changes and f"evict {batch}, 2 GPUs" in diff.changes
    assert any(c.startswith("skip gpu-operator/dcgm-exporter") and "DaemonSet" in c for c in diff.changes)
    assert diff.gpus_affected == 6
    # the checkpointed job loses its restart time (600s x 4 GPUs), the other a whole interval (3600s x 2)
    assert diff.gpu_hours_at_risk == pytest.approx(4 * 600 / 3600 + 2 * 3600 / 3600, abs=1e-3)
    assert diff.blockers == []
    forced = catalogue.dry_run(drain(checkpoint=False), ctx)
    assert forced.gpu_hours_at_risk == pytest.approx(6.0)
    assert twin.snapshot() == before


def test_rollback_lifts_only_the_cordon_its_own_plan_made(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    ctx = context(twin, cluster)
    earlier = Plan("cordon_node", {"reason": "xid 48"}, (Target.for_node(N1),))
    assert catalogue.execute(earlier, ctx).ok
    assert catalogue.execute(drain(), ctx).ok
    rolled = catalogue.rollback(drain(), ctx)
    assert rolled is not None and rolled.ok and "predates this action" in rolled.detail
    assert not twin.state.node_schedulable(N1)
    undone = catalogue.rollback(earlier, ctx)
    assert undone is not None and undone.ok and twin.state.node_schedulable(N1)
