"""The twin's Kubernetes API over real HTTP: discovery, errors, patches, eviction, tables, watch."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.kube_twin import KubeTwin, gpu_deployment
from tests.waiting import wait_for

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
def twin() -> Iterator[KubeTwin]:
    twin = KubeTwin(speed=100).start()
    twin.state.add_node("gpu-node-001", 8)
    twin.state.add_node("gpu-node-002", 8)
    try:
        yield twin
    finally:
        twin.stop()


@pytest.fixture
def http(twin: KubeTwin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=twin.url, timeout=10) as client:
        yield client


def test_legacy_discovery_documents(http: httpx.Client) -> None:
    assert http.get("/version").json()["major"] == "1"
    assert http.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g["preferredVersion"]["version"] for g in http.get("/apis").json()["groups"]}
    assert groups == {"apps": "v1", "policy": "v1", "autoscaling": "v2", "keda.sh": "v1alpha1", "gpuops.io": "v1alpha1"}
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert core["pods/eviction"]["group"] == "policy" and core["pods/eviction"]["kind"] == "Eviction"
    assert "patch" in core["nodes"]["verbs"] and core["nodes"]["namespaced"] is False
    apps = {r["name"] for r in http.get("/apis/apps/v1").json()["resources"]}
    assert {"deployments", "deployments/scale", "daemonsets"} <= apps
    assert http.get("/apis/gpuops.io").json()["versions"][0]["groupVersion"] == "gpuops.io/v1alpha1"
    assert http.get("/apis/batch/v1").status_code == 404


@pytest.mark.parametrize("accept", [AGGREGATED_V2, AGGREGATED_V2BETA1])
def test_aggregated_discovery_when_asked(http: httpx.Client, accept: str) -> None:
    response = http.get("/apis", headers={"Accept": f"{accept},application/json"})
    assert response.headers["content-type"] == accept
    body = response.json()
    assert body["kind"] == "APIGroupDiscoveryList"
    by_group = {item["metadata"]["name"]: item for item in body["items"]}
    deployments = next(
        r for r in by_group["apps"]["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    assert {s["subresource"] for s in deployments["subresources"]} == {"scale", "status"}
    core = http.get("/api", headers={"Accept": accept}).json()
    assert "name" not in core["items"][0]["metadata"]
    assert {r["resource"] for r in core["items"][0]["versions"][0]["resources"]} >= {
        "pods",
        "nodes",
        "events",
    }


def test_errors_are_kubernetes_status_objects(http: httpx.Client) -> None:
    missing = http.get("/api/v1/nodes/gpu-node-404")
    assert missing.status_code == 404
    assert missing.json() | {"details": {}} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": "NotFound",
        "message": 'nodes "gpu-node-404" not found',
        "code": 404,
        "details": {},
    }
    assert http.get("/api/v1/widgets").status_code == 404
    bad = http.post("/api/v1/namespaces/ml/pods", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"
    unknown_patch = http.patch(
        "/api/v1/nodes/gpu-node-001", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert unknown_patch.status_code == 415
    assert http.put("/api/v1/namespaces/ml/pods").status_code == 405
    selector = http.get("/api/v1/pods", params={"labelSelector": "app in ("})
    assert selector.status_code == 400 and "unable to parse" in selector.json()["message"]
    invalid = http.patch(
        "/api/v1/nodes/gpu-node-001",
        json={"spec": {"taints": [{"key": "k", "effect": "Maybe"}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert invalid.status_code == 422 and "spec.taints[0].effect" in invalid.json()["message"]


def test_patch_flavours_and_resource_version_conflict(http: httpx.Client, twin: KubeTwin) -> None:
    url = "/api/v1/nodes/gpu-node-001"
    rv = http.get(url).json()["metadata"]["resourceVersion"]
    smp = http.patch(
        url,
        json={"spec": {"taints": [{"key": "gpu", "value": "bad", "effect": "NoSchedule"}]}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert smp.status_code == 200 and int(smp.json()["metadata"]["resourceVersion"]) > int(rv)
    merge = http.patch(
        url,
        content=json.dumps({"metadata": {"annotations": {"a": "b"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merge.json()["metadata"]["annotations"] == {"a": "b"}
    jp = http.patch(
        url,
        content=json.dumps([{"op": "add", "path": "/spec/unschedulable", "value": True}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert jp.json()["spec"] == {
        "taints": [{"key": "gpu", "value": "bad", "effect": "NoSchedule"}],
        "unschedulable": True,
    }
    assert not twin.state.node_schedulable("gpu-node-001")
    stale = http.patch(
        url,
        json={"metadata": {"resourceVersion": rv, "labels": {"x": "y"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    node = http.get(url).json()
    node["metadata"]["labels"]["role"] = "train"
    assert http.put(url, json=node).status_code == 200
    assert http.put(url, json=node).status_code == 409  # same resourceVersion again


def test_field_and_label_selectors(http: httpx.Client, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 2, 8))
    twin.state.add_deployment(gpu_deployment("serve", 1, 0, namespace="inference"))
    on_one = http.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=gpu-node-001"}).json()["items"]
    assert {p["spec"]["nodeName"] for p in on_one} == {"gpu-node-001"} and len(on_one) >= 1
    train = http.get("/api/v1/namespaces/ml/pods", params={"labelSelector": "app in (train),!missing"}).json()
    assert len(train["items"]) == 2 and train["kind"] == "PodList"
    assert http.get("/api/v1/pods", params={"labelSelector": "app=nope"}).json()["items"] == []


def test_eviction_returns_429_while_budget_blocks(http: httpx.Client, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 8))
    twin.state.add_pdb(
        {
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "train"}}},
        }
    )
    (pod,) = twin.state.list_pods(namespace="ml")
    name = pod["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "ml"}}
    blocked = http.post(f"/api/v1/namespaces/ml/pods/{name}/eviction", json=eviction)
    assert blocked.status_code == 429
    assert blocked.json()["details"]["causes"][0]["reason"] == "DisruptionBudget"
    pdb = http.get("/apis/policy/v1/namespaces/ml/poddisruptionbudgets/train").json()
    assert pdb["status"]["disruptionsAllowed"] == 0 and pdb["status"]["currentHealthy"] == 1
    http.patch(
        "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/train",
        json={"spec": {"minAvailable": 0}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    done = http.post(f"/api/v1/namespaces/ml/pods/{name}/eviction", json=eviction)
    assert done.status_code == 201 and done.json()["status"] == "Success"
    wait_for(
        lambda: http.get(f"/api/v1/namespaces/ml/pods/{name}").status_code == 404,
        timeout=10,
        message="the evicted pod did not terminate",
    )


def test_delete_honours_grace_period_in_simulated_time(http: httpx.Client, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 8))
    (pod,) = twin.state.list_pods(namespace="ml")
    url = f"/api/v1/namespaces/ml/pods/{pod['metadata']['name']}"
    start = twin.clock()
    deleted = http.request("DELETE", url, json={"kind": "DeleteOptions", "gracePeriodSeconds": 120})
    assert deleted.status_code == 200 and deleted.json()["metadata"]["deletionGracePeriodSeconds"] == 120
    wait_for(
        lambda: http.get(url).status_code == 404,
        timeout=10,
        message="the pod was not removed after its grace period",
    )
    assert twin.clock() - start >= 120


def test_scale_subresource(http: httpx.Client, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("serve", 1, 1))
    url = "/apis/apps/v1/namespaces/ml/deployments/serve/scale"
    scale = http.get(url).json()
    assert (
        scale["kind"] == "Scale"
        and scale["spec"]["replicas"] == 1
        and scale["status"]["selector"] == "app=serve"
    )
    patched = http.patch(
        url, json={"spec": {"replicas": 3}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert patched.json()["spec"]["replicas"] == 3
    wait_for(
        lambda: http.get(url).json()["status"]["replicas"] == 3,
        timeout=10,
        message="the deployment did not scale up",
    )
    assert http.put(url, json={"spec": {"replicas": -1}}).status_code == 422
    assert http.put(url, json={"spec": {}}).status_code == 400


def test_server_side_table(http: httpx.Client, twin: KubeTwin) -> None:
    twin.state.set_node_ready("gpu-node-002", False, "KubeletNotReady")
    body = http.get("/api/v1/nodes", headers={"Accept": TABLE}).json()
    assert body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"]][:2] == ["Name", "Status"]
    assert [row["cells"][:2] for row in body["rows"]] == [
        ["gpu-node-001", "Ready"],
        ["gpu-node-002", "NotReady"],
    ]


def test_custom_resources_and_events_round_trip(http: httpx.Client, twin: KubeTwin) -> None:
    created = http.post(
        "/apis/gpuops.io/v1alpha1/nodereboots",
        json={
            "apiVersion": "gpuops.io/v1alpha1",
            "kind": "NodeReboot",
            "metadata": {"name": "reboot-1"},
            "spec": {"nodeName": "gpu-node-001"},
        },
    )
    assert created.status_code == 201 and created.json()["status"]["phase"] == "Pending"
    assert http.post("/apis/gpuops.io/v1alpha1/nodereboots", json=created.json()).status_code == 409
    bad = http.post(
        "/apis/gpuops.io/v1alpha1/gpuresets", json={"metadata": {"name": "r"}, "spec": {"gpu": 1}}
    )
    assert bad.status_code == 422
    event = http.post(
        "/api/v1/namespaces/default/events",
        json={
            "metadata": {"generateName": "gpuops-"},
            "involvedObject": {"kind": "Node", "name": "gpu-node-001"},
            "reason": "GpuopsCordon",
            "message": "cordoned for incident 7",
            "type": "Warning",
        },
    )
    assert event.status_code == 201 and event.json()["metadata"]["name"].startswith("gpuops-")
    found = http.get("/api/v1/events", params={"fieldSelector": "involvedObject.name=gpu-node-001"}).json()
    assert "GpuopsCordon" in [e["reason"] for e in found["items"]]
    assert {e["involvedObject"]["name"] for e in found["items"]} == {"gpu-node-001"}


def test_watch_streams_changes(http: httpx.Client, twin: KubeTwin) -> None:
    with http.stream("GET", "/api/v1/nodes", params={"watch": "true", "timeoutSeconds": "5"}) as stream:
        lines = stream.iter_lines()
        initial = [json.loads(next(lines)) for _ in range(2)]
        assert {e["type"] for e in initial} == {"ADDED"}
        twin.state.add_node("gpu-node-003", 8)
        added = json.loads(next(lines))
        assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "gpu-node-003"


def test_watch_from_a_resource_version_replays_what_happened_since(
    http: httpx.Client, twin: KubeTwin
) -> None:
    rv = http.get("/api/v1/nodes").json()["metadata"]["resourceVersion"]
    twin.state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": {"unschedulable": True}})
    twin.state.delete_object("nodes", "", "gpu-node-002")
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "5", "fieldSelector": "metadata.name!=x"}
    with http.stream("GET", "/api/v1/nodes", params=params) as stream:
        lines = stream.iter_lines()
        first, second = json.loads(next(lines)), json.loads(next(lines))
    assert (first["type"], first["object"]["spec"]) == ("MODIFIED", {"unschedulable": True})
    assert (second["type"], second["object"]["metadata"]["name"]) == ("DELETED", "gpu-node-002")
    assert int(second["object"]["metadata"]["resourceVersion"]) > int(
        first["object"]["metadata"]["resourceVersion"]
    )


def test_watch_too_far_back_is_gone() -> None:
    twin = KubeTwin(speed=1, watch_history=3).start()
    try:
        for i in range(5):
            twin.state.add_node(f"gpu-node-00{i}", 8)
        with httpx.Client(base_url=twin.url, timeout=10) as http:
            gone = http.get("/api/v1/nodes", params={"watch": "true", "resourceVersion": "1"})
            assert gone.status_code == 410 and gone.json()["reason"] == "Expired"
            bad = http.get("/api/v1/nodes", params={"watch": "true", "resourceVersion": "latest"})
            assert bad.status_code == 400
    finally:
        twin.stop()
