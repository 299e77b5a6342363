"""The real kubectl against the twin: get, cordon, uncordon, drain (with DaemonSets, emptyDir, PDBs).

Runs with the kubectl on the PATH and, where that kubectl sits beside versioned builds
(kubectl.1.27 ... kubectl.1.33), also with the oldest and the newest of them, so both the
legacy and the aggregated discovery paths are exercised.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.kube.state import KubeEvent
from tests.integration.kube_twin import KubeTwin, gpu_deployment
from tests.waiting import wait_for

NODE = "gpu-node-001"


def kubectl_binaries() -> list[str]:
    found = shutil.which("kubectl")
    if found is None:
        return []
    versioned = sorted(
        (p for p in Path(os.path.realpath(found)).parent.glob("kubectl.1.*") if os.access(p, os.X_OK)),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.name)),
    )
    extra = [str(versioned[0]), str(versioned[-1])] if versioned else []
    return [found, *dict.fromkeys(extra)]


BINARIES = kubectl_binaries()


def test_kubectl_is_installed() -> None:
    assert BINARIES, (
        "kubectl is not on the PATH: run `make services` (it installs Debian's kubernetes-client)"
    )


@pytest.fixture
def twin() -> Iterator[KubeTwin]:
    twin = KubeTwin(speed=100).start()
    for i in (1, 2):
        twin.state.add_node(f"gpu-node-00{i}", 8)
    twin.state.add_daemonset(
        {
            "metadata": {"name": "dcgm-exporter", "namespace": "gpu-operator"},
            "spec": {
                "selector": {"matchLabels": {"app": "dcgm-exporter"}},
                "template": {
                    "metadata": {"labels": {"app": "dcgm-exporter"}},
                    "spec": {"containers": [{"name": "exporter", "image": "dcgm-exporter:3"}]},
                },
            },
        }
    )
    try:
        yield twin
    finally:
        twin.stop()


def kubectl(
    binary: str, twin: KubeTwin, home: Path, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "none")}
    return subprocess.run(
        [binary, "--server", twin.url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("binary", BINARIES, ids=lambda b: Path(b).name)
def test_get_cordon_uncordon(binary: str, twin: KubeTwin, tmp_path: Path) -> None:
    events: list[KubeEvent] = []
    twin.state.subscribe(events.append)
    got = kubectl(binary, twin, tmp_path, "get", "nodes")
    assert got.returncode == 0, got.stderr
    assert re.search(rf"^{NODE}\s+Ready\s", got.stdout, re.M) and "gpu-node-002" in got.stdout

    cordon = kubectl(binary, twin, tmp_path, "cordon", NODE)
    assert cordon.returncode == 0, cordon.stderr
    assert not twin.state.node_schedulable(NODE)
    assert [(e.kind, e.node) for e in events] == [("node_cordoned", NODE)]
    shown = kubectl(binary, twin, tmp_path, "get", "node", NODE)
    assert "Ready,SchedulingDisabled" in shown.stdout

    uncordon = kubectl(binary, twin, tmp_path, "uncordon", NODE)
    assert uncordon.returncode == 0, uncordon.stderr
    assert twin.state.node_schedulable(NODE)


@pytest.mark.parametrize("binary", BINARIES, ids=lambda b: Path(b).name)
def test_drain_moves_workloads_off_the_node(binary: str, twin: KubeTwin, tmp_path: Path) -> None:
    twin.state.add_deployment(gpu_deployment("train", 2, 4))
    twin.state.add_pod(
        {
            "metadata": {
                "name": "scratch",
                "namespace": "ml",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "scratch-rs",
                        "uid": "1",
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "c"}],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }
    )
    assert {p["metadata"]["namespace"] for p in twin.state.list_pods(node=NODE)} == {"ml", "gpu-operator"}

    drained = kubectl(
        binary,
        twin,
        tmp_path,
        "drain",
        NODE,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    )
    assert drained.returncode == 0, drained.stderr
    assert f"node/{NODE} drained" in drained.stdout
    assert not twin.state.node_schedulable(NODE)
    left = twin.state.list_pods(node=NODE)
    assert [p["metadata"]["namespace"] for p in left] == ["gpu-operator"]  # only the DaemonSet pod
    train = twin.state.list_pods(namespace="ml")
    assert len(train) == 2 and {p["spec"].get("nodeName") for p in train} == {"gpu-node-002"}


def test_drain_without_emptydir_flag_refuses(twin: KubeTwin, tmp_path: Path) -> None:
    twin.state.add_pod(
        {
            "metadata": {"name": "scratch", "namespace": "ml"},
            "spec": {"nodeName": NODE, "volumes": [{"name": "tmp", "emptyDir": {}}]},
        }
    )
    refused = kubectl(BINARIES[0], twin, tmp_path, "drain", NODE, "--ignore-daemonsets", "--timeout=20s")
    assert refused.returncode != 0
    assert "ml/scratch" in refused.stderr
    assert twin.state.get_object("pods", "ml", "scratch")["status"]["phase"] == "Running"


def test_drain_waits_for_the_disruption_budget(twin: KubeTwin, tmp_path: Path) -> None:
    twin.state.add_deployment(gpu_deployment("train", 2, 4))
    twin.state.add_pdb(
        {
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "train"}}},
        }
    )
    drained = kubectl(BINARIES[0], twin, tmp_path, "drain", NODE, "--ignore-daemonsets", "--timeout=60s")
    assert drained.returncode == 0, drained.stderr
    assert "disruption budget" in drained.stderr  # the second eviction was refused, then retried
    pods = twin.state.list_pods(namespace="ml")
    assert len(pods) == 2 and {p["spec"].get("nodeName") for p in pods} == {"gpu-node-002"}


def test_kubectl_scale_taint_and_gpu_reset_request(twin: KubeTwin, tmp_path: Path) -> None:
    twin.state.add_deployment(gpu_deployment("serve", 1, 1, namespace="inference"))
    binary = BINARIES[0]
    scaled = kubectl(binary, twin, tmp_path, "scale", "-n", "inference", "deployment/serve", "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    assert twin.state.get_object("deployments", "inference", "serve")["spec"]["replicas"] == 3
    tainted = kubectl(binary, twin, tmp_path, "taint", "node", NODE, "gpuops.io/bad-gpu=3:NoSchedule")
    assert tainted.returncode == 0, tainted.stderr
    assert twin.state.get_node(NODE)["spec"]["taints"] == [
        {"key": "gpuops.io/bad-gpu", "value": "3", "effect": "NoSchedule"}
    ]
    manifest = tmp_path / "reset.yaml"
    manifest.write_text(
        "apiVersion: gpuops.io/v1alpha1\nkind: GPUReset\nmetadata:\n  name: reset-1\n"
        f"spec:\n  nodeName: {NODE}\n  gpu: 5\n"
    )
    # The twin serves no OpenAPI documents, so client-side validation is turned off.
    created = kubectl(binary, twin, tmp_path, "create", "--validate=false", "-f", str(manifest))
    assert created.returncode == 0, created.stderr
    wait_for(
        lambda: twin.state.get_object("gpuresets", "", "reset-1")["status"]["phase"] == "Succeeded",
        timeout=10,
        message="the GPU reset did not finish",
    )
    shown = kubectl(binary, twin, tmp_path, "get", "gpuresets")
    assert re.search(rf"^reset-1\s+{NODE}\s+5\s+Succeeded", shown.stdout, re.M), shown.stdout


def test_kubectl_watch_prints_new_nodes(twin: KubeTwin, tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    with subprocess.Popen(
        [BINARIES[0], "--server", twin.url, "get", "nodes", "-w", "--request-timeout=5s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as watch:
        assert watch.stdout is not None
        lines = []
        for line in watch.stdout:  # ends when kubectl's request timeout closes the watch
            lines.append(line)
            if line.startswith("gpu-node-002"):
                twin.state.add_node("gpu-node-003", 8)
            if line.startswith("gpu-node-003"):
                watch.terminate()
        watch.wait(timeout=10)  # kubectl exits 1 on SIGTERM; what it printed is what matters
    assert re.match(r"gpu-node-003\s+Ready\s", lines[-1]), lines
