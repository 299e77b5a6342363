"""reset_gpu, isolate_gpu, reboot_node, reschedule_pods, restart_pod, scale_deployment, taint_node and
open_hardware_ticket through the real `kubernetes` client against the twin over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.actions import PlannedAction
from agent.planning import PlanRequest
from agent.rules import RulesPlanner
from agent.tools import ToolResult
from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.annotations import CORDONED_BY
from gpuops.agent_wiring import CatalogueRunbooks, ExecutionActions
from gpuops.execution.service import ExecutionDeps
from gpuops.policy import PolicyConfig
from runbooks import (
    Catalogue,
    InvalidPlan,
    Plan,
    ReplicaBounds,
    Risk,
    RunbookContext,
    RunbookSettings,
    StepResult,
    Target,
    default_catalogue,
)
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION, GPU_ANNOTATION, KubeEvent
from tests.runbook_twin import FAST, Twin, bare_pod, connected, context, deployment, running

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
    return {
        p["metadata"]["name"]: [int(g) for g in p["metadata"]["annotations"][GPU_ANNOTATION].split(",")]
        for p in twin.pods(node, "ml")
        if p["metadata"]["name"].startswith(name_prefix)
    }


# ------------------------------------------------------------------ reset_gpu


def test_reset_gpu_moves_only_the_pods_on_that_gpu_then_resets_it(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("small", 1, 1))
    twin.state.add_deployment(deployment("wide", 1, 2))
    twin.state.add_node(N2, 8)
    ((small, (gpu,)),) = gpus_of(twin, "small").items()
    (wide,) = gpus_of(twin, "wide")
    assert gpu not in gpus_of(twin, "wide")[wide]
    # the device plugin withdrew the faulty GPU; it re-advertises it once the reset has run
    twin.state.set_gpu_healthy(N1, gpu, False)
    twin.state.subscribe(
        lambda e: twin.state.set_gpu_healthy(N1, e.gpu, True) if e.kind == "gpu_reset" and e.gpu is not None else None
    )
    plan = Plan("reset_gpu", {"reason": "xid 79"}, (Target.for_gpu(N1, gpu),))
    ctx = context(twin, cluster)

    before = twin.snapshot()
    diff = catalogue.dry_run(plan, ctx)
    assert twin.snapshot() == before
    assert diff.pods_affected == [f"ml/{small}"] and diff.blockers == []
    assert f"reset GPU {gpu} on {N1} (GPUReset request to the node agent)" in diff.changes
    impatient = default_catalogue(FAST.model_copy(update={"verify_deadline_s": 5}))
    early = impatient.verify(plan, ctx)
    assert not early.ok and "this plan has not reset the GPU" in early.detail

    steps: list[tuple[str, StepResult]] = []
    ctx = context(twin, cluster, steps=steps)
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    assert [n for n, _ in steps] == ["preconditions", "hold_node", "checkpoint", "evict", "reset", "release_node"]
    assert result.data["evicted"] == [f"ml/{small}"]
    (request,) = twin.state.list_objects("gpuresets")[0]
    assert request["spec"] == {"nodeName": N1, "gpu": gpu} and request["status"]["phase"] == "Succeeded"
    names = {p["metadata"]["name"] for p in twin.pods(N1, "ml")}
    assert wide in names and small not in names  # the other pod kept running
    assert "deletionTimestamp" not in twin.state.get_object("pods", "ml", wide)["metadata"]
    assert twin.state.node_schedulable(N1)  # the temporary cordon was lifted
    assert catalogue.verify(plan, ctx).ok
    assert twin.state.get_node(N1)["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    # a redelivered execution finds its own request again instead of resetting twice
    assert catalogue.execute(plan, ctx).ok
    assert len(twin.state.list_objects("gpuresets")[0]) == 1 and twin.state.node_schedulable(N1)


def test_a_second_action_with_the_same_plan_resets_the_gpu_again(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    """An incident reopened when its fault came back plans the same reset again: that new action must reset the
    GPU, not find the first action's finished request and wait for a GPU that never comes back."""
    resets: list[int] = []

    def device_plugin(e: KubeEvent) -> None:
        if e.kind == "gpu_reset" and e.gpu is not None:
            resets.append(e.gpu)
            twin.state.set_gpu_healthy(N1, e.gpu, True)

    twin.state.subscribe(device_plugin)
    plan = Plan("reset_gpu", {"reason": "xid 48"}, (Target.for_gpu(N1, 3),))
    for action_id in (41, 57):
        twin.state.set_gpu_healthy(N1, 3, False)  # the double-bit error (again): the plugin withdraws the GPU
        ctx = context(twin, cluster)
        ctx.action_id = action_id
        assert catalogue.execute(plan, ctx).ok
        assert catalogue.verify(plan, ctx).ok, catalogue.verify(plan, ctx).detail
    assert resets == [3, 3] and len(twin.state.list_objects("gpuresets")[0]) == 2


def test_reset_gpu_refuses_a_gpu_the_node_does_not_have(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    plan = Plan("reset_gpu", {}, (Target.for_gpu(N1, 8),))
    ctx = context(twin, cluster)
    assert catalogue.preconditions(plan, ctx) == [f"{N1} has 8 GPUs; there is no GPU 8"]
    assert not catalogue.execute(plan, ctx).ok
    assert twin.state.list_objects("gpuresets")[0] == [] and twin.state.node_schedulable(N1)


def test_reset_gpu_keeps_a_cordon_it_did_not_make(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    twin.state.update_object("nodes", "", N1, lambda n: {**n, "spec": {"unschedulable": True}})
    ctx = context(twin, cluster)
    assert catalogue.execute(Plan("reset_gpu", {}, (Target.for_gpu(N1, 3),)), ctx).ok
    assert not twin.state.node_schedulable(N1)
    assert CORDONED_BY not in twin.state.get_node(N1)["metadata"]["annotations"]


# ------------------------------------------------------------------ isolate_gpu


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
        rolled = catalogue.rollback(plan, ctx)
        assert rolled is not None and rolled.ok and twin.state.node_schedulable(N1)
        assert small not in gpus_of(twin, "small") and allocatable(twin) == "8"


# ------------------------------------------------------------------ reboot_node


def test_reboot_drains_reboots_and_returns_the_node(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("serve", 1, 4))
    twin.state.add_node(N2, 8)
    events: list[KubeEvent] = []
    twin.state.subscribe(events.append)
    plan = Plan("reboot_node", {}, (Target.for_node(N1),))
    ctx = context(twin, cluster)
    assert catalogue.risk_for(plan, ctx) is Risk.HIGH
    diff = catalogue.dry_run(plan, ctx)
    assert diff.gpus_affected == 8 and diff.gpu_hours_at_risk == pytest.approx(4 * 1.0 + 8 * 900 / 3600)
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    kinds = [e.kind for e in events]
    assert kinds.index("pod_stopped") < kinds.index("node_reboot_started") < kinds.index("node_rebooted")
    assert twin.state.get_node(N1)["status"]["nodeInfo"]["bootID"] == "1"
    assert twin.state.node_schedulable(N1) and len(twin.pods(N2, "ml")) == 1
    assert catalogue.verify(plan, ctx).ok
    assert catalogue.rollback(plan, ctx) is None


# ------------------------------------------------------------------ reschedule_pods


def test_reschedule_moves_the_pods_off_a_slow_gpu_and_rollback_lifts_the_taint(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("slow", 1, 2))
    twin.state.add_deployment(deployment("fine", 1, 2))
    twin.state.add_node(N2, 8)
    ((slow, gpus),) = gpus_of(twin, "slow").items()
    (fine,) = gpus_of(twin, "fine")
    plan = Plan("reschedule_pods", {"gpu": gpus[0]}, (Target.for_node(N1),))
    ctx = context(twin, cluster)
    assert catalogue.dry_run(plan, ctx).pods_affected == [f"ml/{slow}"]
    assert catalogue.execute(plan, ctx).ok
    assert set(gpus_of(twin, "")) == {fine}
    assert len(gpus_of(twin, "slow", N2)) == 1  # its controller recreated it on the other node
    taints = twin.state.get_node(N1)["spec"]["taints"]
    assert taints == [{"key": "gpuops.io/unhealthy", "value": f"gpu-{gpus[0]}", "effect": "NoSchedule"}]
    assert catalogue.verify(plan, ctx).ok
    rolled = catalogue.rollback(plan, ctx)
    assert rolled is not None and rolled.ok and not twin.state.get_node(N1)["spec"].get("taints")


def test_reschedule_refuses_to_move_a_pod_that_has_no_room_elsewhere(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("big", 1, 8))  # fills N1
    twin.state.add_node(N2, 8)
    twin.state.add_deployment(deployment("other", 1, 6))  # lands on N2: 2 GPUs left there
    ((big, gpus),) = gpus_of(twin, "big").items()
    plan = Plan("reschedule_pods", {"gpu": gpus[0]}, (Target.for_node(N1),))
    ctx = context(twin, cluster)
    (problem,) = catalogue.preconditions(plan, ctx)
    assert problem.startswith(f"no room elsewhere for ml/{big} (8 GPUs): the most free GPUs on another node that "
                              "takes new pods is 2")
    assert not catalogue.execute(plan, ctx).ok
    assert set(gpus_of(twin, "big")) == {big}  # still running where it was, slow but not stopped
    twin.state.add_node("gpu-node-003", 8)  # room appears: the move goes ahead
    assert catalogue.preconditions(plan, ctx) == []


# ------------------------------------------------------------------ restart_pod


def test_restart_pod_restarts_the_whole_job(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    twin.state.add_deployment(deployment("job", 2, 2))
    old = set(gpus_of(twin, "job"))
    first = sorted(old)[0]
    plan = Plan("restart_pod", {"reason": "hung: no progress for 20m"}, (Target.for_pod("ml", first),))
    ctx = context(twin, cluster)
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    assert sorted(result.data["deleted"]) == sorted(f"ml/{n}" for n in old)
    new = set(gpus_of(twin, "job"))
    assert len(new) == 2 and not new & old
    assert all(p["status"]["phase"] == "Running" for p in twin.pods(N1, "ml"))
    assert catalogue.verify(plan, ctx).ok


def test_restart_pod_refuses_when_queued_pods_would_take_the_jobs_gpus(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    """The job's pods free their GPUs at once and are recreated at the back of the scheduler's queue: pods
    already waiting for a node would take the GPUs and leave the restarted job pending."""
    twin.state.add_deployment(deployment("job", 2, 4))  # the node's eight GPUs
    twin.state.add_deployment(deployment("queue", 1, 2))  # no room: it waits for a node
    (queued,) = cluster.list_unscheduled_pods()
    assert queued.name.startswith("queue-") and queued.gpu_count == 2 and queued.node is None
    plan = Plan("restart_pod", {"reason": "hung"}, (Target.for_pod("ml", sorted(gpus_of(twin, "job"))[0]),))
    ctx = context(twin, cluster)
    (problem,) = catalogue.preconditions(plan, ctx)
    assert f"ml/{queued.name}" in problem and "the 8 GPUs the restart frees" in problem
    assert not catalogue.execute(plan, ctx).ok and len(gpus_of(twin, "job")) == 2  # nothing was deleted

    twin.state.add_node(N2, 8)  # the queued pod finds its node: nothing waits any more
    twin.sleep(2)
    assert cluster.list_unscheduled_pods() == []
    assert catalogue.preconditions(plan, ctx) == []


def test_restart_pod_refuses_an_unmanaged_pod(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    twin.state.add_pod(bare_pod("notebook", N1, gpus=[0]))
    plan = Plan("restart_pod", {}, (Target.for_pod("tools", "notebook"),))
    ctx = context(twin, cluster)
    (problem,) = catalogue.preconditions(plan, ctx)
    assert "not managed by a controller" in problem
    assert not catalogue.execute(plan, ctx).ok and "tools/notebook" in twin.pod_names(N1)


# ------------------------------------------------------------------ scale_deployment


def test_scale_deployment_within_and_outside_its_bounds(twin: Twin, cluster: KubernetesCluster) -> None:
    twin.state.add_deployment(deployment("llm", 2, 1, namespace="serve"))
    settings = FAST.model_copy(update={"replica_bounds": {"serve/llm": ReplicaBounds(min_replicas=1, max_replicas=4)}})
    catalogue = default_catalogue(settings)
    target = (Target.for_deployment("serve", "llm"),)
    ctx = context(twin, cluster, settings)
    up = Plan("scale_deployment", {"replicas": 4}, target)
    assert catalogue.risk_for(up, ctx) is Risk.LOW
    assert catalogue.dry_run(up, ctx).changes == ["scale serve/llm from 2 to 4 replicas"]
    result = catalogue.execute(up, ctx)
    assert result.ok and result.data["previous_replicas"] == 2
    assert catalogue.verify(up, ctx).ok and len(twin.pods(namespace="serve")) == 4

    before = twin.snapshot()
    for replicas in (5, 0):
        with pytest.raises(InvalidPlan, match=r"outside the bounds for serve/llm \(1\.\.4\)"):
            catalogue.execute(Plan("scale_deployment", {"replicas": replicas}, target), ctx)
    assert twin.snapshot() == before

    down = Plan("scale_deployment", {"replicas": 1}, target)
    assert catalogue.risk_for(down, ctx) is Risk.MEDIUM
    assert catalogue.execute(down, ctx).ok and catalogue.verify(down, ctx).ok
    missing = Plan("scale_deployment", {"replicas": 1}, (Target.for_deployment("serve", "nope"),))
    assert catalogue.preconditions(missing, ctx) == ["deployment serve/nope does not exist"]


def test_a_deployment_without_configured_bounds_may_double_but_not_vanish(twin: Twin,
                                                                          cluster: KubernetesCluster) -> None:
    twin.state.add_deployment(deployment("big", 20, 0, namespace="serve"))  # CPU replicas: room is no question
    catalogue = default_catalogue(FAST)  # no bounds configured for anything
    target = (Target.for_deployment("serve", "big"),)
    ctx = context(twin, cluster, FAST)
    assert catalogue.preconditions(Plan("scale_deployment", {"replicas": 40}, target), ctx) == []
    (problem,) = catalogue.preconditions(Plan("scale_deployment", {"replicas": 41}, target), ctx)
    assert "more than 2x the 20 serve/big wants now (at most 40" in problem
    with pytest.raises(InvalidPlan, match="no configured bounds, so it keeps at least 1 replica"):
        catalogue.execute(Plan("scale_deployment", {"replicas": 0}, target), ctx)
    result = catalogue.execute(Plan("scale_deployment", {"replicas": 30}, target), ctx)
    assert result.ok and result.data["replicas"] == 30 and result.data["previous_replicas"] == 20


def test_an_incidents_scale_out_needs_room_and_ready_replicas(twin: Twin, cluster: KubernetesCluster) -> None:
    twin.state.add_deployment(deployment("llm", 2, 3, namespace="serve"))  # 6 of N1's 8 GPUs
    settings = FAST.model_copy(update={"replica_bounds": {"serve/llm": ReplicaBounds(min_replicas=1, max_replicas=6)}})
    catalogue = default_catalogue(settings)
    target = (Target.for_deployment("serve", "llm"),)
    ctx = context(twin, cluster, settings)
    (problem,) = catalogue.preconditions(Plan("scale_deployment", {"replicas": 3}, target), ctx)
    assert problem.startswith("no room for 1 more replica(s) of serve/llm (3 GPUs each): 0 would fit") \
        and "most free GPUs on a node that takes new pods is 2" in problem
    twin.state.add_node(N2, 8)
    up = Plan("scale_deployment", {"replicas": 4}, target)
    assert catalogue.preconditions(up, ctx) == []  # two more fit on N2
    assert catalogue.execute(up, ctx).ok and catalogue.verify(up, ctx).ok
    # a replica that exists but cannot run (someone scaled past the room there is) is no remedy: not verified
    cluster.set_scale("serve", "llm", 5)
    verified = catalogue.verify(Plan("scale_deployment", {"replicas": 5}, target), ctx)
    assert not verified.ok and "5 of 5 wanted replicas exist, 4 ready" in verified.detail
    assert (verified.data["current"], verified.data["wanted"], verified.data["ready"]) == (5, 5, 4)


def test_an_incidents_scale_out_takes_the_replicas_that_can_run(twin: Twin, cluster: KubernetesCluster) -> None:
    """On a nearly full fleet the rules planner asks the execution port what stops each size (the runbook's
    preconditions, read from the cluster) and proposes the most replicas that can run, saying how many it wanted."""
    twin.state.add_deployment(deployment("llm", 4, 2, namespace="serve"))  # N1's 8 GPUs
    twin.state.add_node(N2, 2)  # room for one more 2-GPU replica
    catalogue = default_catalogue(FAST)
    deps = ExecutionDeps(catalogue=catalogue, cluster=cluster, policy=PolicyConfig())
    actions = ExecutionActions(lambda: None, deps, dry_run=False)  # type: ignore[arg-type,return-value]  # no store
    over = PlannedAction("scale_deployment", {"replicas": 6}, ("deployment/serve/llm",))
    (problem,) = actions.blockers(incident_id=7, action=over)
    assert problem.startswith("no room for 2 more replica(s) of serve/llm (2 GPUs each): 1 would fit")
    assert actions.blockers(incident_id=7, action=PlannedAction("scale_deployment", {"replicas": 7}, ("nope",))) \
        and actions.blockers(incident_id=7, action=PlannedAction("no_such_runbook", {}, ()))  # a bad plan: no crash

    incident = {"id": 7, "family": "overload", "hostname": None, "gpu": None, "scope": "fleet",
                "title": "serve/llm overloaded", "details": {"deployment": "serve/llm"}, "evidence": {}}
    scale = ToolResult("deployment_scale", "ok", "4 replicas", {"deployment": "serve/llm", "replicas": 4, "current": 4})
    request = PlanRequest(incident=incident, fault="inference_overload", evidence=[scale], specs=[],
                          check=CatalogueRunbooks(catalogue).check, run_tool=lambda n, a: ToolResult(n, "error", ""),
                          blockers=lambda action: actions.blockers(incident_id=7, action=action))
    result = RulesPlanner().plan(request)
    assert result.ok, result.escalate
    (action,) = result.actions
    assert action.params["replicas"] == 5 and "5 of the 6 replicas wanted" in action.params["reason"]
    assert "no room for 2 more" in action.params["reason"]
    assert actions.blockers(incident_id=7, action=action) == []


# ------------------------------------------------------------------ taint_node


def test_taint_node_and_its_rollback(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    plan = Plan("taint_node", {"value": "nvlink"}, (Target.for_node(N1),))
    ctx = context(twin, cluster)
    assert catalogue.risk_for(plan, ctx) is Risk.LOW
    assert catalogue.risk_for(Plan("taint_node", {"effect": "NoExecute"}, plan.targets), ctx) is Risk.HIGH
    assert catalogue.execute(plan, ctx).ok and catalogue.verify(plan, ctx).ok
    assert twin.state.get_node(N1)["spec"]["taints"] == [
        {"key": "gpuops.io/unhealthy", "value": "nvlink", "effect": "NoSchedule"}
    ]
    rolled = catalogue.rollback(plan, ctx)
    assert rolled is not None and rolled.ok and not twin.state.get_node(N1)["spec"].get("taints")


# ------------------------------------------------------------------ open_hardware_ticket


class Webhook:
    """A real local HTTP server recording the JSON bodies POSTed to it."""

    def __init__(self, status: int = 201) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rma"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def ticket_plan() -> Plan:
    params = {"gpu": 5, "summary": "XID 79: GPU fell off the bus", "fault": "xid79", "evidence": {"xid": 79}}
    return Plan("open_hardware_ticket", params, (Target.for_node(N1),))


def test_hardware_ticket_is_recorded_and_posted(twin: Twin, cluster: KubernetesCluster, webhook: Webhook) -> None:
    settings = FAST.model_copy(update={"hardware_ticket_webhook_url": webhook.url})
    catalogue = default_catalogue(settings)
    ctx = context(twin, cluster, settings, incident_id=42)
    diff = catalogue.dry_run(ticket_plan(), ctx)
    assert webhook.received == [] and "POST it to the hardware-ticket webhook at 127.0.0.1" in diff.changes
    result = catalogue.execute(ticket_plan(), ctx)
    assert result.ok, result.detail
    ticket = result.data["ticket"]
    assert ticket["node"] == N1 and ticket["gpu"] == 5 and ticket["incident_id"] == 42
    assert ticket["evidence"] == {"xid": 79} and ticket["id"].startswith("rma-")
    assert webhook.received == [ticket]
    assert result.data["webhook"] == {"status": 201}
    assert catalogue.verify(ticket_plan(), ctx).ok


def test_hardware_ticket_survives_a_failing_webhook(twin: Twin, cluster: KubernetesCluster) -> None:
    failing = Webhook(status=503)
    try:
        settings = FAST.model_copy(update={"hardware_ticket_webhook_url": failing.url})
        result = default_catalogue(settings).execute(ticket_plan(), context(twin, cluster, settings))
    finally:
        failing.close()
    assert not result.ok and "answered HTTP 503" in result.detail and "recorded" in result.detail
    assert result.data["ticket"]["gpu"] == 5 and result.data["failed_step"] == "open_ticket"


def test_hardware_ticket_without_a_webhook_is_only_recorded(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    result = catalogue.execute(ticket_plan(), context(twin, cluster))
    assert result.ok and result.data["webhook"] is None and result.data["ticket"]["fault"] == "xid79"
    bad = Plan("open_hardware_ticket", {**ticket_plan().params, "gpu": 9}, ticket_plan().targets)
    assert catalogue.preconditions(bad, context(twin, cluster)) == [f"{N1} has 8 GPUs; there is no GPU 9"]


def test_settings_refuse_a_webhook_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http"):
        RunbookSettings(hardware_ticket_webhook_url="file:///etc/passwd")


def test_an_unreachable_cluster_gives_results_not_exceptions() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    cluster = KubernetesCluster.connect(api_url=url, request_timeout=2)
    try:
        catalogue = default_catalogue(FAST)
        now = [0.0]
        ctx = RunbookContext(
            cluster=cluster, settings=FAST, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
        )
        plan = Plan("drain_node", {}, (Target.for_node(N1),))
        (problem,) = catalogue.preconditions(plan, ctx)
        assert problem.startswith("could not check preconditions") and "cannot reach" in problem
        assert any("could not check preconditions" in b for b in catalogue.dry_run(plan, ctx).blockers)
        result = catalogue.execute(plan, ctx)
        assert not result.ok and result.data["failed_step"] == "preconditions"
        verified = catalogue.verify(Plan("cordon_node", {}, plan.targets), ctx)
        assert not verified.ok and "ClusterUnavailable" in verified.detail and now[0] == 30
    finally:
        cluster.close()


def test_reset_gpu_checkpoints_a_training_job_first(
    twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue
) -> None:
    twin.state.add_deployment(deployment("train", 1, 1, **{CHECKPOINT_SECONDS_ANNOTATION: "20"}))
    ((train, (gpu,)),) = gpus_of(twin, "train").items()
    plan = Plan("reset_gpu", {}, (Target.for_gpu(N1, gpu),))
    ctx = context(twin, cluster)
    assert catalogue.risk_for(plan, ctx) is Risk.HIGH
    start = twin.clock()
    result = catalogue.execute(plan, ctx)
    assert result.ok, result.detail
    assert result.data["checkpointed"] == [f"ml/{train}"] and twin.clock() - start >= 20 + 30  # checkpoint, reset


def test_reschedule_by_cordon_and_its_rollback(twin: Twin, cluster: KubernetesCluster, catalogue: Catalogue) -> None:
    twin.state.add_deployment(deployment("slow", 1, 4))
    twin.state.add_node(N2, 8)
    plan = Plan("reschedule_pods", {"keep_off": "cordon"}, (Target.for_node(N1),))
    ctx = context(twin, cluster)
    assert catalogue.execute(plan, ctx).ok and catalogue.verify(plan, ctx).ok
    assert gpus_of(twin, "slow") == {} and len(gpus_of(twin, "slow", N2)) == 1
    assert not twin.state.node_schedulable(N1) and not twin.state.get_node(N1)["spec"].get("taints")
    rolled = catalogue.rollback(plan, ctx)
    assert rolled is not None and rolled.ok and twin.state.node_schedulable(N1)
