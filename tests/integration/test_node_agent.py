"""`gpuops node-agent` as a real process against the twin's Kubernetes API (left to an external agent), with
nvidia-smi, dcgmi and the reboot played by small programs that answer in the real tools' formats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.errors import AlreadyExists, Conflict
from connectors.kubernetes.node_requests import KubernetesNodeRequests, WatchExpired
from simulator.kube.serve import KubeTwin
from tests.integration.node_world import AgentProcess, NodeWorld, wait_for

NODE, OTHER = "gpu-node-001", "gpu-node-002"
API = "gpuops.io/v1alpha1"


@pytest.fixture
def twin() -> Iterator[KubeTwin]:
    with KubeTwin(speed=1.0, external_node_agent=True) as served:
        served.state.add_node(NODE, 8)
        served.state.add_node(OTHER, 8)
        yield served


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def create(twin: KubeTwin, plural: str, kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return twin.state.create_object(plural, "", {"apiVersion": API, "kind": kind, "metadata": {"name": name},
                                                 "spec": spec})


def get(twin: KubeTwin, plural: str, name: str) -> dict[str, Any]:
    return twin.state.get_object(plural, "", name)


def finished(twin: KubeTwin, plural: str, name: str) -> dict[str, Any] | None:
    obj = get(twin, plural, name)
    return obj if obj["status"].get("phase") in ("Succeeded", "Failed") else None


def start(agents: list[AgentProcess], twin: KubeTwin, world: NodeWorld) -> AgentProcess:
    agent = AgentProcess(twin.url, world).start()
    agents.append(agent)
    return agent


def test_reset_refused_while_a_process_holds_the_gpu(twin: KubeTwin, agents: list[AgentProcess],
                                                      tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, apps=[{"gpu": 3, "pid": 4242, "name": "python3"}])
    start(agents, twin, world)
    create(twin, "gpuresets", "GPUReset", "busy", nodeName=NODE, gpu=3)
    done = wait_for("the refused reset", lambda: finished(twin, "gpuresets", "busy"))
    assert done["status"]["phase"] == "Failed"
    assert "pid 4242 (python3)" in done["status"]["message"] and "GPU 3" in done["status"]["message"]
    assert not world.calls("nvidia-smi --gpu-reset")
    create(twin, "gpuresets", "GPUReset", "free", nodeName=NODE, gpu=1)
    done = wait_for("the reset of a free GPU", lambda: finished(twin, "gpuresets", "free"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["startTime"] and done["status"]["completionTime"]
    assert world.calls("nvidia-smi --gpu-reset") == ["nvidia-smi --gpu-reset -i 1"]


def test_reset_failures_report_the_tools_last_line(twin: KubeTwin, agents: list[AgentProcess],
                                                   tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, reset_error="In use by another client")
    start(agents, twin, world)
    create(twin, "gpuresets", "GPUReset", "inuse", nodeName=NODE, gpu=0)
    create(twin, "gpuresets", "GPUReset", "nogpu", nodeName=NODE, gpu=9)
    done = wait_for("the failed reset", lambda: finished(twin, "gpuresets", "inuse"))
    assert done["status"]["phase"] == "Failed"
    assert "Please first kill all processes" in done["status"]["message"]
    done = wait_for("the reset of a missing GPU", lambda: finished(twin, "gpuresets", "nogpu"))
    assert done["status"]["message"] == f"node {NODE} has no GPU 9"
    world.write(reset_error=None, lost=[5], driver_gone=False)
    create(twin, "gpuresets", "GPUReset", "lost", nodeName=NODE, gpu=5)
    done = wait_for("the reset of a lost GPU", lambda: finished(twin, "gpuresets", "lost"))
    assert done["status"]["phase"] == "Succeeded"  # the fake's reset brings it back, and it answers
    world.write(driver_gone=True)
    create(twin, "gpuresets", "GPUReset", "nodriver", nodeName=NODE, gpu=2)
    done = wait_for("a reset without the driver", lambda: finished(twin, "gpuresets", "nodriver"))
    assert done["status"]["phase"] == "Failed" and "couldn't communicate with the NVIDIA driver" in \
        done["status"]["message"]


def test_a_request_naming_its_gpus_uuid_never_touches_another_gpu(twin: KubeTwin, agents: list[AgentProcess],
                                                                   tmp_path: Path) -> None:
    """GPU 2 is fenced off and NVML numbers the rest 0 to 6: physical GPU 3 is index 2 now, and index 3 is GPU 4.
    A request for index 3 naming GPU 3's UUID (as the telemetry named it before) is refused and says where that GPU
    is; one for index 2 with that UUID resets it; one naming the fenced GPU finds it nowhere."""
    world = NodeWorld(tmp_path, NODE, fenced=[2], renumber=True)
    start(agents, twin, world)
    create(twin, "gpuresets", "GPUReset", "moved", nodeName=NODE, gpu=3, uuid=world.uuid(3))
    done = wait_for("the refused reset", lambda: finished(twin, "gpuresets", "moved"))
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["message"] == (f"node {NODE} renumbered its GPUs: {world.uuid(3)} is GPU 2 now, not GPU 3; "
                                         "nothing done")
    create(twin, "gpufences", "GPUFence", "gone", nodeName=NODE, gpu=4, uuid=world.uuid(2))
    done = wait_for("the refused fence", lambda: finished(twin, "gpufences", "gone"))
    assert done["status"]["phase"] == "Failed" and done["status"]["message"].startswith(
        f"node {NODE} lists no GPU {world.uuid(2)} (or it is fenced off already) (GPU 4 is {world.uuid(5)})")
    assert not world.calls("nvidia-smi --gpu-reset") and not world.calls("nvidia-smi drain")
    create(twin, "gpuresets", "GPUReset", "found", nodeName=NODE, gpu=2, uuid=world.uuid(3))
    done = wait_for("the reset by UUID", lambda: finished(twin, "gpuresets", "found"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert world.calls("nvidia-smi --gpu-reset") == ["nvidia-smi --gpu-reset -i 2"]
    assert world.uuid(3) in done["status"]["message"]


def test_a_request_for_another_node_is_never_touched(twin: KubeTwin, agents: list[AgentProcess],
                                                     tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE)
    start(agents, twin, world)
    theirs = create(twin, "gpuresets", "GPUReset", "theirs", nodeName=OTHER, gpu=0)
    reboot = create(twin, "nodereboots", "NodeReboot", "their-reboot", nodeName=OTHER)
    create(twin, "nodevalidations", "NodeValidation", "ours", nodeName=NODE, level=1)
    wait_for("our validation", lambda: finished(twin, "nodevalidations", "ours"))
    assert get(twin, "gpuresets", "theirs") == theirs
    assert get(twin, "nodereboots", "their-reboot") == reboot
    assert not world.calls("nvidia-smi --gpu-reset") and not world.calls("reboot")


def test_two_agents_take_a_request_once(twin: KubeTwin, agents: list[AgentProcess], tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, reset_sleep=1)
    start(agents, twin, world)
    start(agents, twin, world)
    for n in range(3):
        create(twin, "gpuresets", "GPUReset", f"once-{n}", nodeName=NODE, gpu=n)
    for n in range(3):
        status = wait_for("the reset", lambda n=n: finished(twin, "gpuresets", f"once-{n}"))["status"]
        assert status["phase"] == "Succeeded", status
    assert sorted(world.calls("nvidia-smi --gpu-reset")) == [f"nvidia-smi --gpu-reset -i {n}" for n in range(3)]


def test_an_agent_killed_mid_reset_fails_it_once_on_restart(twin: KubeTwin, agents: list[AgentProcess],
                                                            tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, reset_sleep=60)
    agent = start(agents, twin, world)
    create(twin, "gpuresets", "GPUReset", "cut", nodeName=NODE, gpu=4)
    wait_for("the reset to run", lambda: world.calls("nvidia-smi --gpu-reset"))
    assert get(twin, "gpuresets", "cut")["status"]["phase"] == "Running"
    agent.kill()
    world.write(reset_sleep=0)
    start(agents, twin, world)
    done = wait_for("the interrupted reset to end", lambda: finished(twin, "gpuresets", "cut"))
    assert done["status"]["phase"] == "Failed" and "stopped while the reset ran" in done["status"]["message"]
    agents[-1].kill()
    start(agents, twin, world)  # a third start finds it finished and leaves it as it is
    create(twin, "nodevalidations", "NodeValidation", "after", nodeName=NODE, level=1)
    wait_for("the agent to serve again", lambda: finished(twin, "nodevalidations", "after"))
    assert get(twin, "gpuresets", "cut") == done
    assert len(world.calls("nvidia-smi --gpu-reset")) == 1


def test_reboot_ends_on_the_next_start_by_the_boot_id(twin: KubeTwin, agents: list[AgentProcess],
                                                      tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, reboot_kills_agent=True)
    agent = start(agents, twin, world)
    create(twin, "nodereboots", "NodeReboot", "boot", nodeName=NODE)
    wait_for("the reboot command", lambda: world.calls("reboot"))
    wait_for("the agent to go down with the host", lambda: not agent.alive())
    running = get(twin, "nodereboots", "boot")["status"]
    assert running["phase"] == "Running" and running["bootID"] == "0"
    start(agents, twin, world)  # same boot: the reboot never happened
    done = wait_for("the reboot to end", lambda: finished(twin, "nodereboots", "boot"))
    assert done["status"]["phase"] == "Failed" and "same boot" in done["status"]["message"]

    create(twin, "nodereboots", "NodeReboot", "boot2", nodeName=NODE)
    wait_for("the second reboot command", lambda: len(world.calls("reboot")) == 2)
    wait_for("the agent to go down again", lambda: not agents[-1].alive())
    twin.state.update_object("nodes", "", NODE, _next_boot, subresource="status")
    start(agents, twin, world)
    done = wait_for("the second reboot to end", lambda: finished(twin, "nodereboots", "boot2"))
    assert done["status"]["phase"] == "Succeeded" and "boot id 0 -> 1" in done["status"]["message"]
    assert len(world.calls("reboot")) == 2


def _next_boot(node: dict[str, Any]) -> dict[str, Any]:
    node["status"]["nodeInfo"]["bootID"] = str(int(node["status"]["nodeInfo"]["bootID"]) + 1)
    node["metadata"].pop("resourceVersion", None)
    return node


def test_reboot_command_failure_fails_the_request(twin: KubeTwin, agents: list[AgentProcess],
                                                  tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, reboot_error=True)
    start(agents, twin, world)
    create(twin, "nodereboots", "NodeReboot", "nope", nodeName=NODE)
    done = wait_for("the failed reboot", lambda: finished(twin, "nodereboots", "nope"))
    assert done["status"]["phase"] == "Failed" and "Failed to talk to init daemon." in done["status"]["message"]


def test_validation_records_each_test_and_the_verdict(twin: KubeTwin, agents: list[AgentProcess],
                                                      tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE)
    start(agents, twin, world)
    create(twin, "nodevalidations", "NodeValidation", "clean", nodeName=NODE)
    done = wait_for("the clean validation", lambda: finished(twin, "nodevalidations", "clean"))
    status = done["status"]
    assert status["phase"] == "Succeeded" and status["passed"] is True and status["level"] == 2
    assert {"category": "Hardware", "test": "GPU Memory", "gpu": 7, "result": "Pass"} in status["results"]
    assert world.calls("dcgmi") == ["dcgmi diag -r 2 -j"]

    world.write(diag_fail={"2": "Memory"})
    create(twin, "nodevalidations", "NodeValidation", "dirty", nodeName=NODE, level=3, gpus=[2, 3])
    status = wait_for("the failing validation", lambda: finished(twin, "nodevalidations", "dirty"))["status"]
    assert status["phase"] == "Succeeded" and status["passed"] is False
    assert status["failedTests"] == ["GPU Memory (GPU 2)"]
    assert "DBE errors found" in next(r["message"] for r in status["results"] if r["result"] == "Fail")
    assert world.calls("dcgmi")[-1] == "dcgmi diag -r 3 -j -i 2,3"

    world.write(diag_fail={}, diag_error=True)
    create(twin, "nodevalidations", "NodeValidation", "noengine", nodeName=NODE)
    status = wait_for("the validation without DCGM", lambda: finished(twin, "nodevalidations", "noengine"))["status"]
    assert status["phase"] == "Failed" and "Unable to connect to host engine" in status["message"]


def test_a_hung_diagnostic_fails_at_its_deadline(twin: KubeTwin, agents: list[AgentProcess],
                                                 tmp_path: Path) -> None:
    world = NodeWorld(tmp_path, NODE, diag_hang=True)
    agent = AgentProcess(twin.url, world, "--diag-timeout-s", "2").start()
    agents.append(agent)
    create(twin, "nodevalidations", "NodeValidation", "hung", nodeName=NODE)
    status = wait_for("the hung validation", lambda: finished(twin, "nodevalidations", "hung"))["status"]
    assert status["phase"] == "Failed" and "did not finish in time" in status["message"]
    assert "passed" not in status


def test_gpuops_asks_for_validations_through_the_api() -> None:
    """The adapter's side (what a probation asks), against the twin validating by itself (no external agent)."""
    with KubeTwin(speed=1.0) as served:
        served.state.add_node(NODE, 8)
        served.state.set_gpu_healthy(NODE, 6, False)
        cluster = KubernetesCluster.connect(api_url=served.url)
        try:
            created = cluster.request_node_validation(NODE, name="v1", level=3)
            assert created.phase == "Pending" and created.created_at is not None
            assert cluster.request_node_validation(NODE, name="v1").name == "v1"  # asking again finds it
            with pytest.raises(AlreadyExists):
                cluster.request_node_validation(OTHER, name="v1")
            done = wait_for("the twin's validation", lambda: cluster.get_node_validation("v1").finished and
                            cluster.get_node_validation("v1"))
            assert done.phase == "Succeeded" and done.passed is False and done.failed_tests == ("Memory (GPU 6)",)
        finally:
            cluster.close()


def test_the_agents_adapter_against_the_api_server() -> None:
    """What the agent's port does over HTTP: its node's requests only, a stale claim is a Conflict, and a watch
    from a version the server no longer keeps is WatchExpired (so the agent lists again)."""
    with KubeTwin(speed=1.0, external_node_agent=True, watch_history=5) as served:
        served.state.add_node(NODE, 8)
        cluster = KubernetesCluster.connect(api_url=served.url)
        requests = KubernetesNodeRequests(cluster.api_client)
        try:
            create(served, "gpuresets", "GPUReset", "mine", nodeName=NODE, gpu=0)
            create(served, "gpuresets", "GPUReset", "theirs", nodeName=OTHER, gpu=0)
            items, version = requests.list_requests("GPUReset", NODE)
            assert [i.name for i in items] == ["mine"] and items[0].phase == "Pending"
            assert requests.boot_id(NODE) == "0"
            claimed = requests.write_status("GPUReset", "mine", {"phase": "Running"},
                                            resource_version=items[0].resource_version)
            assert claimed.phase == "Running"
            with pytest.raises(Conflict):
                requests.write_status("GPUReset", "mine", {"phase": "Running"},
                                      resource_version=items[0].resource_version)
            events = list(requests.watch_requests("GPUReset", NODE, version, 1))
            assert [(e, o.name, o.phase) for e, o in events] == [("MODIFIED", "mine", "Running")]
            for n in range(8):  # more changes than the server keeps
                create(served, "gpuresets", "GPUReset", f"more-{n}", nodeName=OTHER, gpu=0)
            with pytest.raises(WatchExpired):
                list(requests.watch_requests("GPUReset", NODE, version, 1))
            # Before Kubernetes 1.31 no field selector reaches a custom resource's spec: gpuops labels each request
            cluster.request_gpu_reset(NODE, 1, name="labelled")
            cluster.request_node_validation(OTHER, name="elsewhere")
            by_label = KubernetesNodeRequests(cluster.api_client, selector="label")
            assert [i.name for i in by_label.list_requests("GPUReset", NODE)[0]] == ["labelled"]
            assert by_label.list_requests("NodeValidation", NODE)[0] == []
            assert [i.name for i in by_label.list_requests("NodeValidation", OTHER)[0]] == ["elsewhere"]
        finally:
            cluster.close()
