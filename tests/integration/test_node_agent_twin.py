"""The fleet twin with an external node agent (`gpuops sim --external-node-agent`): the twin leaves the requests to
real `gpuops node-agent` processes, whose nvidia-smi, dcgmi and reboot programs reach the simulated hosts at
`/sim/nodes/...`: a reboot changes the node's boot id, a reset clears what a reset clears, and a diagnostic fails
on a GPU whose fault persists."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.scenario import scenario_from_dict
from simulator.server import ServedTwin, TwinClock, serve_twin
from simulator.twin import Twin
from tests.integration.node_world import GPUOPS, REPO_ROOT, AgentProcess, NodeWorld, wait_for

API = "gpuops.io/v1alpha1"
RESET_NODE, REBOOT_NODE = "gpu-node-001", "gpu-node-002"


@pytest.fixture
def served() -> Iterator[tuple[Twin, ServedTwin]]:
    scenario = scenario_from_dict({
        "name": "node-agent", "seed": 7, "duration": "6h", "step": "15s",
        "fleet": {"nodes": 2, "gpus_per_node": 8},
        "faults": [
            {"kind": "gsp_timeout", "node": RESET_NODE, "gpu": 2, "at": "60s"},
            {"kind": "xid79", "node": REBOOT_NODE, "gpu": 5, "at": "60s", "transient": True},
            {"kind": "xid79", "node": REBOOT_NODE, "gpu": 6, "at": "60s"},
        ],
    }, source="test")
    twin = Twin(scenario, external_node_agent=True)
    server = serve_twin(twin)
    clock = TwinClock(twin, speed=60.0, tick_s=0.05)
    clock.start()
    yield twin, server
    clock.stop()
    server.stop()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def create(twin: Twin, plural: str, kind: str, name: str, **spec: Any) -> None:
    twin.kube.create_object(plural, "", {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})


def finished(twin: Twin, plural: str, name: str) -> dict[str, Any] | None:
    status: dict[str, Any] = twin.kube.get_object(plural, "", name)["status"]
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def unhealthy(twin: Twin, node: str) -> list[int]:
    return [g["index"] for g in twin.kube.host_gpus(node)["gpus"] if not g["healthy"]]


def test_the_twin_leaves_requests_to_the_agent(served: tuple[Twin, ServedTwin], agents: list[AgentProcess],
                                               tmp_path: Path) -> None:
    twin, server = served
    wait_for("the faults", lambda: unhealthy(twin, RESET_NODE) == [2] and unhealthy(twin, REBOOT_NODE) == [5, 6])
    create(twin, "nodevalidations", "NodeValidation", "nobody-yet", nodeName=RESET_NODE, level=1)
    time.sleep(1.0)  # a simulated minute
    assert finished(twin, "nodevalidations", "nobody-yet") is None  # no agent runs: it stays Pending

    world = NodeWorld(tmp_path / "reset", RESET_NODE, twin=server.url)
    agents.append(AgentProcess(server.url, world).start())
    assert wait_for("the first validation", lambda: finished(twin, "nodevalidations", "nobody-yet"))["passed"]
    create(twin, "nodevalidations", "NodeValidation", "before-reset", nodeName=RESET_NODE)
    status = wait_for("the validation", lambda: finished(twin, "nodevalidations", "before-reset"))
    assert status["passed"] is False and status["failedTests"] == ["GPU Memory (GPU 2)"]
    create(twin, "gpuresets", "GPUReset", "reset-2", nodeName=RESET_NODE, gpu=2)
    status = wait_for("the reset", lambda: finished(twin, "gpuresets", "reset-2"))
    assert status["phase"] == "Succeeded", status
    wait_for("the GPU healthy after its reset", lambda: unhealthy(twin, RESET_NODE) == [])
    create(twin, "nodevalidations", "NodeValidation", "after-reset", nodeName=RESET_NODE)
    assert wait_for("the validation", lambda: finished(twin, "nodevalidations", "after-reset"))["passed"] is True


def test_a_reboot_by_the_agent_changes_the_boot_id(served: tuple[Twin, ServedTwin], agents: list[AgentProcess],
                                                   tmp_path: Path) -> None:
    twin, server = served
    wait_for("the faults", lambda: unhealthy(twin, REBOOT_NODE) == [5, 6])
    world = NodeWorld(tmp_path, REBOOT_NODE, twin=server.url, reboot_kills_agent=True)
    agent = AgentProcess(server.url, world).start()
    agents.append(agent)
    create(twin, "nodereboots", "NodeReboot", "reboot", nodeName=REBOOT_NODE)
    wait_for("the host to go down", lambda: not agent.alive())
    assert twin.kube.get_object("nodereboots", "", "reboot")["status"]["phase"] == "Running"
    wait_for("the node back with a new boot id", lambda: twin.kube.host_gpus(REBOOT_NODE)["bootID"] == "1")
    agents.append(AgentProcess(server.url, world).start())  # the DaemonSet starts the agent after the boot
    status = wait_for("the reboot to end", lambda: finished(twin, "nodereboots", "reboot"))
    assert status["phase"] == "Succeeded" and "boot id 0 -> 1" in status["message"]
    assert unhealthy(twin, REBOOT_NODE) == [6]  # the transient fall off the bus came back; GPU 6 did not
    create(twin, "nodevalidations", "NodeValidation", "after-reboot", nodeName=REBOOT_NODE)
    status = wait_for("the validation", lambda: finished(twin, "nodevalidations", "after-reboot"))
    assert status["passed"] is False and status["failedTests"] == ["GPU Memory (GPU 6)"]


def allocatable(twin: Twin, node: str) -> int:
    return int(twin.kube.get_object("nodes", "", node)["status"]["allocatable"]["nvidia.com/gpu"])


def test_a_fence_takes_the_gpu_from_the_device_plugin_until_the_reboot(
        served: tuple[Twin, ServedTwin], agents: list[AgentProcess], tmp_path: Path) -> None:
    twin, server = served
    wait_for("the faults", lambda: unhealthy(twin, RESET_NODE) == [2])
    twin.kube.update_object("nodes", "", RESET_NODE,  # cordoned: no new pod lands while the test picks a free GPU
                            lambda node: {**node, "spec": {**node["spec"], "unschedulable": True}})
    rows = twin.kube.host_gpus(RESET_NODE)["gpus"]
    busy = next(g["index"] for g in rows if g["pods"])
    free = next(g["index"] for g in rows if not g["pods"] and g["healthy"])
    bus = "00000000:%02X:00.0" % (0x18 + 0x10 * free)
    world = NodeWorld(tmp_path, RESET_NODE, twin=server.url, drain_error="In use by another client")
    agents.append(AgentProcess(server.url, world).start())
    create(twin, "gpufences", "GPUFence", "held", nodeName=RESET_NODE, gpu=busy)
    status = wait_for("the fence of a GPU a pod holds", lambda: finished(twin, "gpufences", "held"))
    assert status["phase"] == "Failed" and "evict the pods using it before fencing it off" in status["message"]
    create(twin, "gpufences", "GPUFence", "refused", nodeName=RESET_NODE, gpu=free)
    status = wait_for("the refused fence", lambda: finished(twin, "gpufences", "refused"))
    assert status["phase"] == "Failed" and f"drain -p {bus} -m 1 failed" in status["message"]
    assert allocatable(twin, RESET_NODE) == 7  # GPU 2 only, which the device plugin marked unhealthy
    assert not any(line.startswith("nvidia-smi drain") for line in world.calls()[:3])

    world.write(drain_error=None)
    create(twin, "gpufences", "GPUFence", "fence", nodeName=RESET_NODE, gpu=free)
    status = wait_for("the fence", lambda: finished(twin, "gpufences", "fence"))
    assert status["phase"] == "Succeeded", status
    assert allocatable(twin, RESET_NODE) == 6
    assert free not in [g["index"] for g in twin.kube.host_gpus(RESET_NODE)["gpus"]]
    calls = world.calls()
    assert calls.index(f"nvidia-smi -i {free} -pm 0") < calls.index(f"nvidia-smi drain -p {bus} -m 1") \
        < calls.index("plugin-restart")
    create(twin, "gpufences", "GPUFence", "again", nodeName=RESET_NODE, gpu=free)
    status = wait_for("the second fence", lambda: finished(twin, "gpufences", "again"))
    assert status["phase"] == "Failed" and f"has no GPU {free}" in status["message"]  # NVML no longer shows it

    twin.kube.host_reboot(RESET_NODE)  # the driver reloads: the drain state is gone
    wait_for("the node back", lambda: twin.kube.host_gpus(RESET_NODE)["bootID"] == "1")
    assert free in [g["index"] for g in twin.kube.host_gpus(RESET_NODE)["gpus"]]
    assert allocatable(twin, RESET_NODE) == 8 - len(unhealthy(twin, RESET_NODE))  # the reboot cleared GPU 2 too


def test_gpuops_sim_external_node_agent(tmp_path: Path) -> None:
    """The command's flag: requests stay Pending for an agent, and the hosts answer at /sim/nodes/..."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([GPUOPS, "sim", "--nodes", "2", "--gpus-per-node", "4", "--port", str(port), "--speed",
                             "60", "--external-node-agent", "--json"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert json.loads(proc.stdout.readline())["external_node_agent"] is True  # type: ignore[union-attr]
        wait_for("the twin to serve", lambda: _get(url, "/healthz") is not None, timeout=30)
        body = json.dumps({"apiVersion": API, "kind": "NodeReboot", "metadata": {"name": "r"},
                           "spec": {"nodeName": RESET_NODE}}).encode()
        _post(url, "/apis/gpuops.io/v1alpha1/nodereboots", body)
        time.sleep(1.0)  # a simulated minute
        reboot = json.loads(_get(url, "/apis/gpuops.io/v1alpha1/nodereboots/r") or b"{}")
        assert reboot["status"]["phase"] == "Pending"
        assert json.loads(_get(url, f"/sim/nodes/{RESET_NODE}/gpus") or b"{}")["bootID"] == "0"
        _post(url, f"/sim/nodes/{RESET_NODE}/reboot", b"")
        wait_for("the new boot", lambda: json.loads(_get(url, f"/sim/nodes/{RESET_NODE}/gpus") or b"{}")
                 .get("bootID") == "1", timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url + path, timeout=5) as response:
            data: bytes = response.read()
            return data
    except OSError:
        return None


def _post(url: str, path: str, body: bytes) -> None:
    request = urllib.request.Request(url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass
