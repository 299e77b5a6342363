"""Malformed objects are refused with Invalid and leave the twin's state as it was."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.kube.errors import BadRequest, Invalid
from simulator.kube.state import KubeState


@pytest.fixture
def state() -> KubeState:
    s = KubeState(lambda: 1_700_000_000.0)
    s.add_node("gpu-node-001", 8)
    return s


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ml"}, "spec": {"containers": [{"name": "c"}], **spec}}


def gpu_pod(value: Any) -> dict[str, Any]:
    return pod(containers=[{"name": "c", "resources": {"limits": {"nvidia.com/gpu": value}}}])


@pytest.mark.parametrize(
    "body",
    [
        gpu_pod("eight"),
        gpu_pod(-1),
        gpu_pod(1.5),
        gpu_pod(True),
        pod(terminationGracePeriodSeconds="soon"),
        pod(containers="c"),
        pod(nodeSelector={"a": 1}),
        {"metadata": {"name": "Bad_Name", "namespace": "ml"}, "spec": {}},
        {"metadata": {"name": "p", "namespace": "ml", "labels": {"a": 1}}, "spec": {}},
        {
            "metadata": {"name": "p", "namespace": "ml", "annotations": {"sim.gpuops.io/gpus": "0,x"}},
            "spec": {},
        },
        {"spec": {}},
    ],
)
def test_malformed_pods_are_refused(state: KubeState, body: dict[str, Any]) -> None:
    before = state.list_objects("pods")
    with pytest.raises(Invalid):
        state.create_object("pods", "ml", body)
    assert state.list_objects("pods") == before


def deployment(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "namespace": "ml"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {}},
            **spec,
        },
    }


@pytest.mark.parametrize(
    "body",
    [
        deployment(replicas=-1),
        deployment(replicas="2"),
        deployment(replicas=None),
        deployment(selector={"matchExpressions": [{"key": "a", "operator": "Near"}]}),
        deployment(
            template={
                "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "x"}}}]}
            }
        ),
    ],
)
def test_malformed_deployments_are_refused(state: KubeState, body: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        state.add_deployment(body)
    assert state.list_deployments() == [] and state.list_pods() == []


@pytest.mark.parametrize(
    "spec",
    [
        {"minAvailable": "half"},
    {"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes"},
        {"maxUnavailable": -1},
        {"minAvailable": 1, "maxUnavailable": 1},
        {"minAvailable": 1, "selector": {"matchExpressions": [{"key": "a", "operator": "Around"}]}},
    ],
)
def test_malformed_budgets_are_refused(state: KubeState, spec: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        state.add_pdb({"metadata": {"name": "b", "namespace": "ml"}, "spec": spec})
    assert state.list_objects("poddisruptionbudgets")[0] == []


@pytest.mark.parametrize(
    "spec",
    [
        {"unschedulable": "yes"},
        {"taints": [{"key": "k", "effect": "Sometimes"}]},
        {"taints": [{"effect": "NoSchedule"}]},
        {"taints": "k=v"},
    ],
)
def test_malformed_node_updates_are_refused(state: KubeState, spec: dict[str, Any]) -> None:
    before = state.get_node("gpu-node-001")
    with pytest.raises(Invalid):
        state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": spec})
    assert state.get_node("gpu-node-001") == before


def test_percentage_budget_is_valid(state: KubeState) -> None:
    state.add_deployment(
        {
            "metadata": {"name": "d", "namespace": "ml"},
            "spec": {
                "replicas": 6,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c"}]}},
            },
        }
    )
    state.add_pdb(
        {
            "metadata": {"name": "b", "namespace": "ml"},
            "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "d"}}},
        }
    )
    (budget,) = state.list_objects("poddisruptionbudgets")[0]
    assert budget["spec"]["maxUnavailable"] == "25%"
    # 25% of 6 pods rounds up to 2 that may be unavailable, as Kubernetes rounds maxUnavailable.
    status = budget["status"]
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (6, 4, 2)


def test_bad_selectors_are_bad_requests(state: KubeState) -> None:
    with pytest.raises(BadRequest):
        state.list_objects("pods", label_selector="app in (")
    with pytest.raises(BadRequest):
        state.list_objects("pods", field_selector="spec.nodeName~x")


def test_events_need_an_involved_object(state: KubeState) -> None:
    with pytest.raises(Invalid):
        state.create_object("events", "default", {"metadata": {"name": "e"}, "reason": "R"})
