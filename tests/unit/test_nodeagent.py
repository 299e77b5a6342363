"""The node agent's decisions over the in-memory requests port and a fake runner (no processes, no clock but
the test's): a request is taken once, its phase only moves forward, an abandoned one is ended once by kind, a
request for another node is never read as ours, and the watch lists again after 410."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.kubernetes.errors import ClusterUnavailable
from connectors.kubernetes.node_requests import InMemoryNodeRequests, RequestObject
from gpuops.nodeagent import NodeAgent, NodeAgentSettings
from gpuops.nodeagent.agent import rfc3339
from gpuops.nodeagent.commands import CommandResult

NODE = "gpu-node-001"
T0 = 1_767_225_600.0
UUID0, UUID1 = "GPU-00000000-0000-0000-0000-000000000000", "GPU-11111111-1111-1111-1111-111111111111"


class Node:
    """The programs' answers, keyed by what they were asked."""

    def __init__(self, apps: str = "", reset_rc: int = 0, diag: dict[str, Any] | None = None) -> None:
        self.apps, self.reset_rc, self.diag = apps, reset_rc, diag
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        args = tuple(argv)
        self.ran.append(args)
        if "--query-gpu=index,uuid,pci.bus_id" in args and "-i" not in args:
            return CommandResult(args, 0, f"0, {UUID0}, 00000000:18:00.0\n1, {UUID1}, 00000000:2A:00.0\n", "")
        if any(a.startswith("--query-compute-apps") for a in args):
            return CommandResult(args, 0, self.apps, "")
        if "--gpu-reset" in args:
            return CommandResult(args, self.reset_rc, "", "" if self.reset_rc == 0 else "GPU reset failed: Busy")
        if "--query-gpu=index,uuid,pci.bus_id" in args:
            return CommandResult(args, 0, f"{args[args.index('-i') + 1]}, {UUID0}, 00000000:18:00.0\n", "")
        if args[:2] == ("dcgmi", "diag"):
            if self.diag is None:
                return CommandResult(args, None, "", "", timed_out=True)
            return CommandResult(args, 226, json.dumps(self.diag), "")
        if args[0] == "reboot":
            return CommandResult(args, 0, "", "")
        raise AssertionError(f"unexpected command {args}")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def agent(requests: InMemoryNodeRequests, node: Node, clock: Clock | None = None) -> NodeAgent:
    settings = NodeAgentSettings(nvidia_smi="nvidia-smi", dcgmi="dcgmi", reboot_command="reboot now", heartbeat_s=10)
    return NodeAgent(node=NODE, requests=requests, settings=settings, agent_id="agent-a", clock=clock or Clock(),
                     run=node)


def test_a_reset_is_refused_while_a_process_holds_the_gpu_and_done_when_free() -> None:
    requests = InMemoryNodeRequests()
    node = Node(apps=f"{UUID1}, 4242, python3\n{UUID0}, 5151, [Not Found]\n")
    requests.add("GPUReset", "busy", nodeName=NODE, gpu=1)
    done = agent(requests, node).handle("GPUReset", "busy")
    assert done is not None and done.phase == "Failed"
    assert done.status["message"].startswith(f"GPU 1 ({UUID1}) on {NODE} is in use by pid 4242 (python3)")
    assert not [a for a in node.ran if "--gpu-reset" in a]

    node.apps = ""
    requests.add("GPUReset", "free", nodeName=NODE, gpu=0)
    done = agent(requests, node).handle("GPUReset", "free")
    assert done is not None and done.phase == "Succeeded"
    assert ("nvidia-smi", "--gpu-reset", "-i", "0") in node.ran
    assert done.status["startTime"] == done.status["completionTime"] == rfc3339(T0)


def test_a_request_is_taken_once_and_never_written_over() -> None:
    requests = InMemoryNodeRequests()
    node = Node()
    requests.add("GPUReset", "r", nodeName=NODE, gpu=0)
    first = agent(requests, node).handle("GPUReset", "r")
    assert first is not None and first.phase == "Succeeded"
    assert agent(requests, node).handle("GPUReset", "r") is None  # finished: nothing runs again
    assert sum(1 for a in node.ran if "--gpu-reset" in a) == 1


def test_a_claim_that_lost_the_race_runs_nothing() -> None:
    requests = InMemoryNodeRequests()
    node = Node()
    requests.add("GPUReset", "raced", nodeName=NODE, gpu=0)
    stale = requests.get_request("GPUReset", "raced")
    requests.write_status("GPUReset", "raced", {"phase": "Running", "agent": "agent-b"})

    class Stale(InMemoryNodeRequests):
        def get_request(self, kind: str, name: str) -> RequestObject:
            return stale  # read before the other agent's claim landed

    racing = Stale()
    racing.__dict__.update(requests.__dict__)
    assert agent(racing, node).handle("GPUReset", "raced") is None
    assert node.ran == [] and requests.get_request("GPUReset", "raced").status["agent"] == "agent-b"


def test_another_nodes_request_is_never_touched() -> None:
    requests = InMemoryNodeRequests()
    theirs = requests.add("NodeReboot", "theirs", nodeName="gpu-node-002")
    node = Node()
    assert agent(requests, node).handle("NodeReboot", "theirs") is None
    assert agent(requests, node).recover() == []
    assert requests.get_request("NodeReboot", "theirs") == theirs and node.ran == []


def test_a_reboot_stays_running_until_the_next_boot() -> None:
    requests = InMemoryNodeRequests({NODE: "boot-a"})
    node = Node()
    requests.add("NodeReboot", "boot", nodeName=NODE)
    running = agent(requests, node).handle("NodeReboot", "boot")
    assert running is not None and running.phase == "Running" and running.status["bootID"] == "boot-a"
    assert ("reboot", "now") in node.ran
    requests.boot_ids[NODE] = "boot-b"
    (done,) = agent(requests, Node()).recover()  # the agent after the boot: at once, heartbeat or not
    assert done.phase == "Succeeded" and done.status["message"] == f"node {NODE} rebooted: boot id boot-a -> boot-b"


def test_abandoned_requests_end_once_their_heartbeat_is_silent() -> None:
    requests, clock = InMemoryNodeRequests({NODE: "boot-a"}), Clock()
    for kind, name, spec in (("NodeReboot", "reboot", {}), ("GPUReset", "reset", {"gpu": 0}),
                             ("NodeValidation", "diag", {})):
        requests.add(kind, name, nodeName=NODE, **spec)
        requests.write_status(kind, name, {"phase": "Running", "startTime": rfc3339(T0),
                                           "heartbeatTime": rfc3339(T0), "bootID": "boot-a"})
    clock.now = T0 + 25  # within three beats: another agent may still be on them
    assert agent(requests, Node(), clock).recover() == []
    clock.now = T0 + 31
    ended = {r.name: (r.phase, r.status["message"]) for r in agent(requests, Node(), clock).recover()}
    assert ended["reboot"][0] == "Failed" and "same boot (boot-a)" in ended["reboot"][1]
    assert ended["reset"][0] == "Failed" and "stopped while the reset ran" in ended["reset"][1]
    assert ended["diag"][0] == "Failed" and "stopped while the diagnostic ran" in ended["diag"][1]
    assert agent(requests, Node(), clock).recover() == []  # ended once


def test_a_validation_records_each_test_or_fails_when_it_cannot_run() -> None:
    diag = {"DCGM GPU Diagnostic": {"test_categories": [{"category": "Hardware", "tests": [
        {"name": "GPU Memory", "results": [{"gpu_ids": "0", "status": "Pass"},
                                           {"gpu_ids": "1", "status": "Fail", "warnings": "DBE"}]}]}]}}
    requests = InMemoryNodeRequests()
    requests.add("NodeValidation", "v", nodeName=NODE, level=1, gpus=[0, 1])
    node = Node(diag=diag)
    done = agent(requests, node).handle("NodeValidation", "v")
    assert done is not None and done.phase == "Succeeded" and done.status["passed"] is False
    assert done.status["failedTests"] == ["GPU Memory (GPU 1)"] and done.status["level"] == 1
    assert ("dcgmi", "diag", "-r", "1", "-j", "-i", "0,1") in node.ran
    requests.add("NodeValidation", "hung", nodeName=NODE)
    done = agent(requests, Node(diag=None)).handle("NodeValidation", "hung")
    assert done is not None and done.phase == "Failed" and "passed" not in done.status


def test_the_watch_lists_again_after_410() -> None:
    requests = InMemoryNodeRequests()
    node = Node()
    requests.add("GPUReset", "early", nodeName=NODE, gpu=0)
    requests.expire_before = 10**6  # every watch is too old: each pass lists again, and finds what is pending
    worker = agent(requests, node)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if requests.get_request("GPUReset", "early").finished:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert requests.get_request("GPUReset", "early").phase == "Succeeded"


def test_the_agent_waits_for_the_api_server_at_start() -> None:
    class Down(InMemoryNodeRequests):
        calls = 0

        def list_requests(self, kind: str, node: str) -> tuple[list[RequestObject], str]:
            Down.calls += 1
            if Down.calls <= 2:
                raise ClusterUnavailable("connection refused")
            return super().list_requests(kind, node)

    requests = Down()
    requests.add("GPUReset", "r", nodeName=NODE, gpu=0)
    settings = NodeAgentSettings(nvidia_smi="nvidia-smi", retry_s=0.01)
    worker = NodeAgent(node=NODE, requests=requests, settings=settings, run=Node())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if requests.get_request("GPUReset", "r").finished:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert requests.get_request("GPUReset", "r").phase == "Succeeded" and Down.calls > 2


def test_a_holder_is_named_with_its_pod(tmp_path: Path) -> None:
    """With the host's /proc (hostPID), a process is traced to its pod by its cgroup, in either driver's spelling."""
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0"
        ".slice/cri-containerd-abc.scope\n")
    (tmp_path / "5151").mkdir()
    (tmp_path / "5151" / "cgroup").write_text("0::/system.slice/nvidia-persistenced.service\n")
    requests = InMemoryNodeRequests()
    requests.add("GPUReset", "busy", nodeName=NODE, gpu=1)
    settings = NodeAgentSettings(nvidia_smi="nvidia-smi", proc_root=str(tmp_path))
    node = Node(apps=f"{UUID1}, 4242, python3\n{UUID1}, 5151, nvidia-persistenced\n")
    done = NodeAgent(node=NODE, requests=requests, settings=settings, run=node).handle("GPUReset", "busy")
    assert done is not None and done.phase == "Failed"
    assert "pid 4242 (python3, pod uid 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0), pid 5151 (nvidia-persistenced)" in \
        done.status["message"]


def test_a_fence_drains_the_gpu_then_restarts_the_device_plugin_and_says_what_failed() -> None:
    listing = f"0, {UUID0}, 00000000:18:00.0\n1, {UUID1}, 00000000:2A:00.0\n"
    failing: set[str] = set()
    ran: list[tuple[str, ...]] = []

    def run(argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        args = tuple(argv)
        ran.append(args)
        if "--query-gpu=index,uuid,pci.bus_id" in args:
            return CommandResult(args, 0, listing, "")
        if any(a.startswith("--query-compute-apps") for a in args):
            return CommandResult(args, 0, "", "")
        said = "drain" if "drain" in args else "plugin" if args[0] == "pkill" else "pm" if "-pm" in args else ""
        assert said, f"unexpected command {args}"
        return CommandResult(args, 1 if said in failing else 0, "", f"{said} failed: Insufficient Permissions")

    def fence(name: str, gpu: int) -> RequestObject:
        requests.add("GPUFence", name, nodeName=NODE, gpu=gpu)
        settings = NodeAgentSettings(nvidia_smi="nvidia-smi", dcgmi="dcgmi", reboot_command="reboot now",
                                     plugin_restart_command="pkill -x nvidia-device-plug")
        done = NodeAgent(node=NODE, requests=requests, settings=settings, clock=Clock(), run=run).handle(
            "GPUFence", name)
        assert done is not None
        return done

    requests = InMemoryNodeRequests()
    done = fence("ok", 1)
    assert done.phase == "Succeeded" and done.status["bus"] == "00000000:2A:00.0", done.status
    assert ran[-3:] == [("nvidia-smi", "-i", "1", "-pm", "0"), ("nvidia-smi", "drain", "-p", "00000000:2A:00.0",
                                                               "-m", "1"), ("pkill", "-x", "nvidia-device-plug")]
    failing.add("plugin")
    done = fence("no-plugin", 1)
    assert done.phase == "Failed" and "drained, but the device plugin could not be restarted" in \
        done.status["message"] and "Insufficient Permissions" in done.status["message"]
    failing.add("drain")
    ran.clear()
    done = fence("no-drain", 0)
    assert done.phase == "Failed" and done.status["message"].startswith("nvidia-smi drain -p 00000000:18:00.0 -m 1 "
                                                                        "failed")
    assert not [a for a in ran if a[0] == "pkill"]  # nothing restarted for a GPU that was not drained
    assert fence("none", 5).status["message"] == f"node {NODE} has no GPU 5 (or it is fenced off already)"
    listing = f"0, {UUID0}, not-a-bus\n"
    assert "is no PCI bus id" in fence("garbled", 0).status["message"]
