"""isolate_gpu through the real `kubernetes` client against the twin over real HTTP: only the pods on the failing
GPU move, the node agent fences the GPU, and the node serves on with its other GPUs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.kubernetes.adapter import KubernetesCluster
from runbooks import Catalogue, Plan, Risk, StepResult, Target, default_catalogue
from simulator.kube.state import GPU_ANNOTATION
from tests.runbook_twin import FAST, Twin, connected, context, deployment, running

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


def gpus_of(twin: Twin, name_prefix: str, node: str = N1) -> dict[str, list[int]]:
    return {p["metadata"]["name"]: [int(g) for g in p["metadata"]["annotations"][GPU_ANNOTATION].split(",")]
            for p in twin.pods(node, "ml") if p["metadata"]["name"].startswith(name_prefix)}


def allocatable(twin: Twin, node: str = N1) -> str:
    return str(twin.state.get_node(node)["status"]["allocatable"]["nvidia.com/gpu"])


def test_isolate_moves_only_the_pods_on_that_gpu_fences_it_and_leaves_the_node_serving(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("small", 1, 1))
    twin.state.add_deployment(deployment("wide", 1, 2))
    ((small, (gpu,)),) = gpus_of(twin, "small").items()
    (wide,) = gpus_of(twin, "wide")
    twin.state.add_node(N2, 8)  # where the moved replica goes
    plan = Plan("isolate_gpu", {"reason": "SBE storm"}, (Target.for_gpu(N1, gpu),))
    ctx = context(twin, cluster)
    assert catalogue.get("isolate_gpu").takes == "gpu"
    assert catalogue.risk_for(plan, ctx) is Risk.MEDIUM

    before = twin.snapshot()
    diff = catalogue.dry_run(plan, ctx)
    assert twin.snapshot() == before
    assert diff.pods_affected == [f"ml/{small}"] and diff.blockers == [] and diff.gpus_affected == 1
    assert any(c.startswith(f"fence GPU {gpu} off on {N1}") for c in diff.changes)
    assert diff.changes[-1].startswith(f"uncordon {N1}")

    steps: list[tuple[str, StepResult]] = []
    ctx = context(twin, cluster, steps=steps)
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    assert [n for n, _ in steps] == ["preconditions", "hold_node", "checkpoint", "evict", "fence", "release_node"]
    (request,) = twin.state.list_objects("gpufences")[0]
    assert request["spec"] == {"nodeName": N1, "gpu": gpu} and request["status"]["phase"] == "Succeeded"
    names = {p["metadata"]["name"] for p in twin.pods(N1, "ml")}
    assert wide in names and small not in names  # the other pod kept running
    assert "deletionTimestamp" not in twin.state.get_object("pods", "ml", wide)["metadata"]
    assert twin.state.node_schedulable(N1)  # the node takes new pods again, on its other GPUs
    assert allocatable(twin) == "7"
    verified = catalogue.verify(plan, ctx)
    assert verified.ok and "7/8" in verified.detail, verified.detail
    # the replacement replica runs, and never on the fenced GPU
    assert all(gpu not in gpus for gpus in gpus_of(twin, "small").values())
    assert gpus_of(twin, "small") or gpus_of(twin, "small", N2)


def test_isolate_refuses_a_node_someone_else_cordoned(twin: Twin, cluster: KubernetesCluster,
                                                       catalogue: Catalogue) -> None:
    twin.state.update_object("nodes", "", N1, lambda n: {**n, "spec": {"unschedulable": True}})
    plan = Plan("isolate_gpu", {}, (Target.for_gpu(N1, 2),))
    ctx = context(twin, cluster)
    assert catalogue.preconditions(plan, ctx) == [f"{N1} is cordoned by someone else; gpuops leaves their node as "
                                                  "it is"]
    assert not catalogue.execute(plan, ctx).ok
    assert twin.state.list_objects("gpufences")[0] == [] and not twin.state.node_schedulable(N1)


def test_a_fence_that_never_completes_fails_the_isolation_and_the_rollback_returns_the_node() -> None:
    """No node agent answers the GPUFence request: the step times out, the action is not verified, and the rollback
    lifts this action's cordon (the pod that moved stays where it went; the GPU is still offered)."""
    with running(Twin(external_node_agent=True).start()) as twin, connected(twin) as cluster:
        twin.state.add_node(N1, 8)
        twin.state.add_deployment(deployment("small", 1, 1))
        ((small, (gpu,)),) = gpus_of(twin, "small").items()
        catalogue = default_catalogue(FAST)
        plan = Plan("isolate_gpu", {}, (Target.for_gpu(N1, gpu),))
        ctx = context(twin, cluster)
        result = catalogue.execute(plan, ctx)
        assert not result.ok and not twin.state.node_schedulable(N1)
        verified = catalogue.verify(plan, ctx)
        assert not verified.ok and "Pending" in verified.detail, verified.detail
        assert catalogue.rollback(plan, ctx).ok and twin.state.node_schedulable(N1)
        assert small not in gpus_of(twin, "small") and allocatable(twin) == "8"
