"""The rules planner: fault kind and context map to runbooks deterministically. It is the planner when no
LLM is configured and the fallback whenever the LLM planner fails.

Scenario fault kinds reach the agent as finding families (ARCHITECTURE.md), and `fault_of` maps them back:

| scenario fault | finding family (evidence) | fault here | plan |
| --- | --- | --- | --- |
| xid79 | xid (xid=79), gpu_lost | xid79 | cordon, drain, reboot node |
| xid48_dbe | xid (xid=48), ecc (dbe>0) | xid48_dbe | cordon, drain, reset GPU |
| ecc_sbe_storm | ecc (xid 92 or sbe rate) | ecc_sbe_storm | drain, hardware ticket |
| row_remap_exhaustion | row_remap, xid 64 | row_remap_exhaustion | cordon, drain, hardware ticket |
| thermal_runaway | thermal | thermal_runaway | cordon, drain, hardware ticket |
| nvlink_degradation | nvlink | nvlink_degradation | cordon, drain, reset GPU |
| gsp_timeout | xid (xid=119/120) | gsp_timeout | cordon, drain, reset GPU |
| pcie_replay_storm | pcie | pcie_replay_storm | cordon, drain, hardware ticket (the link is to be reseated) |
| node_not_ready | node_not_ready | node_not_ready | cordon, drain, reboot node |
| straggler | straggler | straggler | reschedule the pods off the slow GPU |
| hung_job | hung_job | hung_job | restart the job's pods (all ranks, wherever they run) |
| memory_leak | memory_leak | memory_leak | restart the leaking pod |
| inference_overload | overload | inference_overload | scale the deployment up |
| ib_link_down, _flap, _degraded, nic_lost | fabric (condition) | the same | cordon, drain*, ticket (HCA, port) |
| ib_symbol_errors | fabric (symbol_errors) | ib_symbol_errors | ticket (HCA, port), move the job* |
| — | power, anomaly, other XIDs | notify | notify the humans |

*no drain when the port's GPU holds no pod, only replicas of Deployments, or a job whose every pod is on the node:
nothing of theirs crosses the port. A slow port whose job stays (nothing of it crosses the port, or it has no room
elsewhere) keeps new work across nodes off the port instead (`taint_port`, after the ticket), except a degraded
link, which is cordoned.

A sequence is proposed action by action, each through policy and approval (see agent.graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agent.actions import PlannedAction
from agent.planning import PlanRequest, PlanResult
from agent.rejections import rejection_of, replan_reason
from agent.tools import ToolResult
from domain.jobs import job_of

TargetRule = Literal["node", "gpu", "gpu_pod", "deployment", "none"]


@dataclass(frozen=True)
class Step:
    runbook: str
    target: TargetRule


CORDON, DRAIN, REBOOT = Step("cordon_node", "node"), Step("drain_node", "node"), Step("reboot_node", "node")
RESET, TICKET = Step("reset_gpu", "gpu"), Step("open_hardware_ticket", "node")
MOVE = Step("reschedule_pods", "node")
TAINT_PORT = Step("taint_port", "node")

RULES: dict[str, tuple[Step, ...]] = {
    "xid79": (CORDON, DRAIN, REBOOT),
    "xid48_dbe": (CORDON, DRAIN, RESET),
    "ecc_sbe_storm": (DRAIN, TICKET),
    "row_remap_exhaustion": (CORDON, DRAIN, TICKET),
    "thermal_runaway": (CORDON, DRAIN, TICKET),
    "nvlink_degradation": (CORDON, DRAIN, RESET),
    "gsp_timeout": (CORDON, DRAIN, RESET),
    "xid_reset_gpu": (CORDON, DRAIN, RESET),
    # a link replaying above the driver's limit is reseated or replaced, and a storm may end with the GPU off the
    # bus: the work leaves before either (a cordoned node left serving loses it in the crash)
    "pcie_replay_storm": (CORDON, DRAIN, TICKET),
    "node_not_ready": (CORDON, DRAIN, REBOOT),
    "straggler": (Step("reschedule_pods", "node"),),
    "hung_job": (Step("restart_pod", "gpu_pod"),),
    "memory_leak": (Step("restart_pod", "gpu_pod"),),
    "xid_application": (Step("restart_pod", "gpu_pod"),),
    "inference_overload": (Step("scale_deployment", "deployment"),),
    "ib_link_down": (CORDON, DRAIN, TICKET),
    "ib_link_flap": (CORDON, DRAIN, TICKET),
    # a slow link slows its job and stops nothing: ticketed first, the job moves only where it can run elsewhere
    # (a drain with no room would stop it for the day the repair takes), else it stays at the slower pace
    # (`JOB_STAYS`); a move policy refuses goes to a human with the ticket already open
    "ib_link_degraded": (TICKET, MOVE),
    "nic_lost": (CORDON, DRAIN, TICKET),
    "ib_symbol_errors": (TICKET, MOVE),
    "notify": (Step("notify_only", "none"),),
}

# A one-GPU fault whose node the healthy-GPU floor will not let out still gets the work off that GPU: the GPU alone
# leaves service (`isolate_gpu`, the node serving on with its other GPUs, then the GPU's ticket), or is reset in
# place where a reset is the fix (`reset_gpu` moves only that GPU's pods). See `gpu_only_plan`.
ISOLATE = Step("isolate_gpu", "gpu")
GPU_ONLY: dict[str, tuple[Step, ...]] = {
    "ecc_sbe_storm": (ISOLATE, TICKET),
    "row_remap_exhaustion": (ISOLATE, TICKET),
    "thermal_runaway": (ISOLATE, TICKET),
    "pcie_replay_storm": (ISOLATE, TICKET),
    "xid48_dbe": (RESET,),
    "gsp_timeout": (RESET,),
    "xid_reset_gpu": (RESET,),
}

XID_FAULTS = {79: "xid79", 48: "xid48_dbe", 119: "gsp_timeout", 120: "gsp_timeout", 64: "row_remap_exhaustion",
              92: "ecc_sbe_storm", 74: "nvlink_degradation"}
# What a slow port's plan keeps when its job stays on the node (nothing crosses the port, or no room elsewhere):
# a degraded link keeps new work off the node; symbol errors, which cost the job little, the ticket, and new work
# across nodes off the port (the node takes work that stays inside it, as under a return without its port).
JOB_STAYS: dict[str, tuple[Step, ...]] = {"ib_link_degraded": (CORDON, TICKET),
                                          "ib_symbol_errors": (TICKET, TAINT_PORT)}
FABRIC_FAULTS = {"link_down": "ib_link_down", "link_flap": "ib_link_flap", "link_degraded": "ib_link_degraded",
                 "hca_lost": "nic_lost", "symbol_errors": "ib_symbol_errors"}
XID_ACTION_FAULTS = {"reset_gpu": "xid_reset_gpu", "reboot_node": "xid79", "restart_application": "xid_application"}
FAMILY_FAULTS = {
    "gpu_lost": "xid79", "row_remap": "row_remap_exhaustion", "thermal": "thermal_runaway",
    "nvlink": "nvlink_degradation", "pcie": "pcie_replay_storm", "straggler": "straggler", "hung_job": "hung_job",
    "memory_leak": "memory_leak", "node_not_ready": "node_not_ready", "overload": "inference_overload",
}


def fault_of(incident: dict[str, Any], xid_action: str | None = None) -> str:
    """The rules table's fault kind for an incident snapshot (family, XID code, evidence)."""
    family, evidence = incident.get("family", ""), incident.get("evidence") or {}
    explicit = (incident.get("details") or {}).get("fault")
    if isinstance(explicit, str) and explicit in RULES:
        return explicit
    if family == "xid":
        code = incident.get("xid")
        if isinstance(code, int) and code in XID_FAULTS:
            return XID_FAULTS[code]
        return XID_ACTION_FAULTS.get(xid_action or "", "notify")
    if family == "ecc":
        dbe = evidence.get("dbe") or evidence.get("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") or 0
        return "xid48_dbe" if (isinstance(dbe, int | float) and dbe > 0) or incident.get("xid") == 48 \
            else "ecc_sbe_storm"
    if family == "fabric":
        return FABRIC_FAULTS.get(str(evidence.get("condition", "")), "ib_link_down")
    return FAMILY_FAULTS.get(family, "notify")


def _evidence(request: PlanRequest, tool: str) -> ToolResult | None:
    return next((e for e in request.evidence if e.tool == tool and e.status == "ok"), None)


def _records(result: ToolResult | None) -> tuple[list[dict[str, Any]], bool]:
    """A tool's list of records as the evidence holds it, and whether it is whole: evidence keeps the first
    `agent.fencing.MAX_ITEMS` records of a list and ends it with a note of how many more it left out."""
    if result is None or not isinstance(result.data, list):
        return [], False
    records = [r for r in result.data if isinstance(r, dict)]
    return records, len(records) == len(result.data)


def _running(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in records if p.get("phase") in ("Running", "Pending", "")]


def _pods_on_gpu(request: PlanRequest) -> list[dict[str, Any]]:
    pods, _ = _records(_evidence(request, "pods_on_node"))
    gpu = request.incident.get("gpu")
    named = (request.incident.get("evidence") or {}).get("pod")
    running = _running(pods)
    if isinstance(named, str) and named:
        chosen = [p for p in running if p["name"] == named]
        if chosen:
            return chosen
    return [p for p in running if gpu is not None and gpu in p.get("gpus", [])]


PORT_FAULTS = frozenset({"ib_link_down", "ib_link_flap", "ib_link_degraded", "nic_lost", "ib_symbol_errors"})


def _port_gpu(request: PlanRequest) -> int | None:
    """The GPU whose traffic the incident's port carries (HCA mlx5_i beside GPU i), when the finding names it."""
    device = str((request.incident.get("evidence") or {}).get("device") or "")
    return int(device[5:]) if device.startswith("mlx5_") and device[5:].isdigit() else None


def _port_work_stays_on_node(request: PlanRequest) -> str:
    """Why a fabric port's fault stops none of the work on its node (empty when it may, or when that is unknown).
    A port carries the traffic of the GPU beside it (HCA i, GPU i) to other nodes: a GPU that holds no pod, or
    only replicas of Deployments (each serving on its own node), sends nothing over it, and draining them would
    move serving capacity for a cable. Nor does a job whose every pod runs on this node (its ranks talk over
    NVLink and PCIe): draining it would restart it from its checkpoint for nothing. Any other job's pod (a Job,
    a StatefulSet, anything but a ReplicaSet) may have ranks elsewhere, so its node is drained as before."""
    if request.fault not in PORT_FAULTS:
        return ""
    # the node's pods as read (`no_data`: it has none); a failed read decides nothing
    pods, whole = _records(next((e for e in request.evidence
                                 if e.tool == "pods_on_node" and e.status in ("ok", "no_data")), None))
    gpu = _port_gpu(request)
    if gpu is None:  # (a read that failed or is missing is not whole: it concludes nothing below)
        return ""
    device = f"mlx5_{gpu}"
    # a pod holding GPUs whose indices the cluster does not say may hold this one
    beside = [p for p in _running(pods) if gpu in p.get("gpus", []) or int(p.get("gpu_count") or 0) > len(
        p.get("gpus", []))]
    if not beside:  # and where the list was cut, an unlisted pod may hold it
        return f"GPU {gpu} beside {device} holds no pod, so no traffic crosses the port" if whole else ""
    jobs = [p for p in beside if not str(p.get("owner") or "").startswith("ReplicaSet/")]
    if not jobs:
        names = ", ".join(f"{p['namespace']}/{p['name']}" for p in beside[:3])
        return f"GPU {gpu} beside {device} serves replicas of Deployments ({names}), whose traffic stays on the node"
    local = _job_on_node_alone(request)
    if local and all(job_of(p["name"], p["namespace"]) == local for p in jobs):
        return f"GPU {gpu} beside {device} runs {local}, whose every pod is on {request.incident.get('hostname')}"
    return ""


def _job_on_node_alone(request: PlanRequest) -> str | None:
    """The incident's job when the cluster says all its running pods are on the incident's node, else None (a
    failed or missing read, or a list the evidence cut short, decides nothing)."""
    records, whole = _records(_evidence(request, "job_pods"))
    pods = _running(records)
    host = request.incident.get("hostname")
    if not whole or not pods or not host or any(p.get("node") != host for p in pods):
        return None
    return job_of(pods[0]["name"], pods[0]["namespace"])


def _job_pods(request: PlanRequest) -> list[dict[str, Any]]:
    """The job's pods wherever they run (a job-level incident acts on the job, not on the node it opened on)."""
    return _running(_records(_evidence(request, "job_pods"))[0])


def _most_that_run(counts: list[int], runs: Callable[[int], bool]) -> int | None:
    """The largest of `counts` (ascending) that `runs`, found in log-many asks (each reads the cluster): what
    runs at a count runs at every smaller one (room, growth); None when even the smallest does not."""
    if runs(counts[-1]):
        return counts[-1]
    if not runs(counts[0]):
        return None
    lo, hi = 0, len(counts) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if runs(counts[mid]):
            lo = mid
        else:
            hi = mid - 1
    return counts[lo]


def gpu_only_plan(incident: dict[str, Any], fault: str) -> list[PlannedAction] | None:
    """The plan that takes only the incident's GPU out of service (`GPU_ONLY`), for when the healthy-GPU floor
    refuses its node; None when the fault has none, or the incident names no one GPU."""
    steps = GPU_ONLY.get(fault)
    if not steps:
        return None
    request = PlanRequest(incident=incident, fault=fault, evidence=[], specs=[], check=lambda _: [],
                          run_tool=lambda name, _: ToolResult(name, "error", "no tools here"))
    built = [RulesPlanner()._build(step, request) for step in steps]
    actions = [b for b in built if not isinstance(b, str)]
    return actions if len(actions) == len(built) else None


class RulesPlanner:
    """Deterministic: the same incident and evidence always give the same plan."""

    name = "rules"

    def plan(self, request: PlanRequest) -> PlanResult:
        steps = RULES.get(request.fault, RULES["notify"])
        local = _port_work_stays_on_node(request)
        stays = "" if local or request.fault not in JOB_STAYS else self._cannot_move(request)
        if request.fault in JOB_STAYS and (local or stays):
            steps = JOB_STAYS[request.fault]
            if not (request.incident.get("evidence") or {}).get("device"):  # no HCA named: no port to taint
                steps = tuple(s for s in steps if s != TAINT_PORT)
        elif local:  # cordoned against new work across nodes and ticketed; what runs there goes on
            steps = tuple(s for s in steps if s != DRAIN)
        actions: list[PlannedAction] = []
        skipped: list[str] = []
        for step in steps:
            built = self._build(step, request)
            if isinstance(built, str):
                return PlanResult(self.name, ok=False, escalate=built, notes=[built])
            if rejection_of(request.incident, built) is not None:  # people said no to this step: never again
                skipped.append(built.runbook)
                continue
            actions.append(built)
        if skipped and not actions:
            why = (f"every step of the rules plan for {request.fault} ({', '.join(skipped)}) was rejected for this "
                   "incident; a human decides")
            return PlanResult(self.name, ok=False, escalate=why, notes=[why])
        problems = {a.runbook: p for a in actions if (p := request.check(a))}
        if problems:
            detail = "; ".join(f"{name}: {', '.join(p)}" for name, p in problems.items())
            return PlanResult(self.name, ok=False, escalate=f"rules plan failed validation: {detail}",
                              notes=[detail], rejections=[{"planner": self.name, "problems": detail}])
        notes = [f"left out {', '.join(skipped)}: rejected for this incident"] if skipped else []
        rationale = self._rationale(request, actions)
        if local:
            rationale += f" No drain: {local}."
        if stays:
            rationale += f" The job stays at the slower pace: {stays}."
        if skipped:
            rationale += (f" Re-plan: {', '.join(skipped)} left out, rejected by people "
                          f"({replan_reason(request.incident) or 'no reason given'}).")[:600]
        return PlanResult(self.name, ok=True, actions=actions, rationale=rationale, notes=notes)

    def _build(self, step: Step, request: PlanRequest) -> PlannedAction | str:
        inc = request.incident
        # a node-wide incident whose facts name one GPU (its peers' counters rose with it) acts on that GPU
        host, gpu = inc.get("hostname"), inc.get("gpu") if inc.get("gpu") is not None else inc.get("fault_gpu")
        reason = f"gpuops incident {inc['id']}: {inc.get('title', request.fault)}"[:500]
        params: dict[str, Any] = {"reason": reason}
        if step.runbook == "notify_only":
            return PlannedAction("notify_only", {"message": f"{reason}; no automated remedy"}, ("none",))
        if step.target in ("node", "gpu") and not host:
            return f"{step.runbook} needs the incident's node, and incident {inc['id']} names none"
        if step.runbook == "open_hardware_ticket":
            evidence = inc.get("evidence") or {}
            if request.fault in FABRIC_FAULTS.values() and evidence.get("device"):
                reason = (f"{reason}; HCA {evidence['device']} port {evidence.get('port', '1')}: check the cable, "
                          f"the transceiver and the HCA")[:500]
            params = {"gpu": gpu, "summary": reason, "fault": request.fault,
                      "evidence": {k: v for k, v in (inc.get("evidence") or {}).items()
                                   if isinstance(v, int | float | str)}}
        if step.runbook == "taint_port":
            device = str((inc.get("evidence") or {}).get("device") or "")
            if not device:
                return f"taint_port needs the incident's HCA, and incident {inc['id']} names none"
            params = {"hca": device, "reason": reason}
        if step.runbook == "reschedule_pods":
            params["gpu"] = gpu
            if request.fault in PORT_FAULTS:  # the job on the port's GPU; the node waits for its repair, cordoned
                params.update(gpu=_port_gpu(request), keep_off="cordon")
        if step.target == "node":
            return PlannedAction(step.runbook, params, (f"node/{host}",))
        if step.target == "gpu":
            if gpu is None:
                return (f"{step.runbook} needs the incident's GPU, and incident {inc['id']} is node-wide with no "
                        "one GPU its facts name")
            return PlannedAction(step.runbook, params, (f"gpu/{host}/{gpu}",))
        if step.target == "gpu_pod":
            # a hung job restarts all its ranks; a hung replica of a Deployment restarts alone (its peers serve)
            whole_job = request.fault == "hung_job" and not (request.incident.get("evidence") or {}).get("replica")
            pods = _pods_on_gpu(request) or (_job_pods(request) if whole_job else [])
            if not pods:
                job = (inc.get("details") or {}).get("job")
                return (f"no running pod of {job} found in the cluster to restart" if whole_job and job
                        else f"no running pod found on {host} GPU {gpu} to restart")
            pod = pods[0]
            params["whole_job"] = whole_job
            return PlannedAction(step.runbook, params, (f"pod/{pod['namespace']}/{pod['name']}",))
        if step.target == "deployment":
            return self._scale(request, reason)
        raise AssertionError(f"rules table names an unknown target rule {step.target!r}")

    def _cannot_move(self, request: PlanRequest) -> str:
        """Why the job on a slow port's GPU cannot move (empty when it can): moving it with no room elsewhere
        would stop it, where the slow link only slows it."""
        move = self._build(MOVE, request)
        if isinstance(move, str):
            return move
        return "; ".join(request.blockers(move))

    @staticmethod
    def _scale(request: PlanRequest, reason: str) -> PlannedAction | str:
        details = request.incident.get("details") or {}
        deployment = details.get("deployment")
        scale = _evidence(request, "deployment_scale")
        current = scale.data.get("replicas") if scale is not None and isinstance(scale.data, dict) else None
        if not isinstance(deployment, str) or "/" not in deployment:
            return "the overload incident names no deployment to scale"
        if not isinstance(current, int) or current < 0:
            return f"the current replica count of {deployment} is unknown"
        wanted = current + max(1, math.ceil(current * 0.5))
        target = (f"deployment/{deployment}",)

        def scale_to(replicas: int, why: str = reason) -> PlannedAction:
            return PlannedAction("scale_deployment", {"replicas": replicas, "reason": why[:500]}, target)

        # half again, or as far towards it as the deployment's configured bounds allow
        valid = [n for n in range(current + 1, wanted + 1) if not request.check(scale_to(n))]
        if not valid:
            problems = "; ".join(request.check(scale_to(current + 1)))
            return f"{deployment} cannot scale out from {current} replicas: {problems or 'no valid replica count'}"
        blocked: dict[int, list[str]] = {}

        def runs(n: int) -> bool:
            blocked[n] = request.blockers(scale_to(n))
            return not blocked[n]

        fits = _most_that_run(valid, runs)
        if fits is None or fits == valid[-1]:
            return scale_to(valid[-1])  # all of it runs, or none does (the proposal then names what stops it)
        short = "; ".join(blocked.get(fits + 1) or blocked[valid[-1]])
        return scale_to(fits, f"{reason}; {fits} of the {valid[-1]} replicas wanted, as many as can run now "
                              f"({short})")

    @staticmethod
    def _rationale(request: PlanRequest, actions: list[PlannedAction]) -> str:
        inc = request.incident
        where = inc.get("hostname") or "the fleet"
        gpu = "" if inc.get("gpu") is None else f" GPU {inc['gpu']}"
        finding = ", ".join(f"{k}={v}" for k, v in sorted((inc.get("evidence") or {}).items())
                            if isinstance(v, int | float | str))[:300]
        cited = "; ".join(f"{e.tool}: {e.summary}" for e in request.evidence if e.status == "ok")[:800]
        steps = " → ".join(a.runbook for a in actions)
        return (f"{inc.get('family')} incident on {where}{gpu} classified as {request.fault} "
                f"(finding evidence: {finding or 'none'}). Evidence: {cited or 'none gathered'}. "
                f"Rules table entry {request.fault!r}: {steps}.")
