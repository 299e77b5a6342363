"""One scenario's evaluation: run the whole loop and the untouched baseline run, then score faults, incidents,
actions, unsafe actions and GPU-hours lost into the report's shape (see `gpuops eval --help`)."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.evaluation import EXPECTED_KINDS, same_workload, score_faults
from domain import ActionStatus, IncidentStatus
from evaluation.baselines import (
    HUMAN_DELAY_S,
    INCIDENT_MARGIN_S,
    BaselineRun,
    baseline_run,
    fault_window,
    gpu_hours_lost,
    threshold_mitigation,
)
from evaluation.loop import LoopRun, PlannerFactory, run_loop
from evaluation.safety import tally
from gpuops.policy import PolicyConfig
from simulator.scenario import Scenario

# Runbooks that take the work off a faulty GPU or node: the first one verified mitigates the fault.
MITIGATIONS = frozenset({"drain_node", "reschedule_pods", "restart_pod", "scale_deployment", "reset_gpu", "isolate_gpu",
                         "reboot_node"})
# A fault on a part that carries no work (a port no job crosses) has none to take off: a cordon, keeping new work
# off it until its repair, is the whole remedy, and so is a port's taint, keeping new work across nodes (the only
# work a port carries) off it.
IDLE_PART_MITIGATIONS = MITIGATIONS | {"cordon_node", "taint_port"}
HANDED_TO_HUMAN = frozenset({IncidentStatus.ESCALATED})
PROPOSAL_ESCALATED = re.compile(r"^action \d+ \(\w+\): escalated: ")


@dataclass(frozen=True)
class EvalOptions:
    planner: PlannerFactory
    planner_name: str
    policy: PolicyConfig


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _matches(incident: dict[str, Any], fault: dict[str, Any], scenario: Scenario) -> bool:
    start, end = fault_window(fault, scenario)
    opened, last = incident["opened_at"] or 0.0, incident["updated_at"] or 0.0
    if not (opened <= end + INCIDENT_MARGIN_S and last >= start):
        return False
    if incident["scope"] == "fleet":
        return fault["node"] in (incident["details"].get("hosts") or [])
    details = incident["details"]
    return bool(incident["hostname"] == fault["node"]) or same_workload(fault, details.get("deployment")
                                                                         or details.get("job"))


def _escalated_at(audit: list[dict[str, Any]], incident_id: int, since: float) -> float | None:
    return next((e["ts"] for e in audit if e["incident_id"] == incident_id and e["kind"] == "incident.transition"
                 and e["data"].get("to") == IncidentStatus.ESCALATED and e["ts"] >= since), None)


@dataclass(frozen=True)
class _Outcome:
    """What gpuops did about one fault."""

    incident_id: int | None
    related: frozenset[int]           # the incident and any it absorbed or folded
    actions: list[dict[str, Any]]     # executed after the fault's onset
    mitigated: float | None           # first mitigation verified
    handed: float | None              # a human takes over (escalation + the human's delay)
    contained: bool = False           # the node was already drained by gpuops when the fault began


def _outcome(scenario: Scenario, run: LoopRun, fault: dict[str, Any], detected_at: float | None, *,
             idle: bool = False) -> _Outcome:
    """The fault's incident (preferring one of the fault's own kind), its actions, and when it was mitigated
    (`idle`: the faulty part carried no work, so keeping work off it mitigates it)."""
    if detected_at is None:  # an undetected fault has no incident, whatever else happened on its node meanwhile
        return _Outcome(None, frozenset(), [], None, None)
    top = {i["id"]: (i["parent_id"] or i["id"]) for i in run.incidents}
    expected = EXPECTED_KINDS.get(str(fault["kind"]), frozenset())
    candidates = sorted((i for i in run.incidents if _matches(i, fault, scenario)),
                        key=lambda i: (i["family"] not in expected, i["scope"] == "fleet" and i["family"]
                                       not in expected, i["opened_at"] or 0.0, i["id"]))
    if not candidates:
        return _Outcome(None, frozenset(), [], None, None)
    incident_id = top[candidates[0]["id"]]
    related = frozenset({i["id"] for i in candidates} | {incident_id})
    since = _ts(fault["onset"]) - scenario.step  # an incident open before the fault brings older actions
    actions = [a for a in run.actions if a["incident_id"] in related and a["status"] in ActionStatus.EXECUTED
               and (a["executed_at"] or 0.0) >= since]
    verified = [a["verified_at"] for a in actions
                if a["status"] == ActionStatus.SUCCEEDED and a["verified_at"]
                and a["runbook"] in (IDLE_PART_MITIGATIONS if idle else MITIGATIONS)]
    mitigated = min(verified) if verified else None
    contained = mitigated is None and _drained_by_gpuops(run.actions, str(fault["node"]), _ts(fault["onset"]))
    if contained:  # nothing ran there: gpuops had already taken the node's work off it
        mitigated = _ts(fault["onset"])
    handed = None
    status = next(i["status"] for i in run.incidents if i["id"] == incident_id)
    if mitigated is None:
        # a human takes over when the incident escalates, or at detection if it was escalated already
        escalated = _escalated_at(run.audit, incident_id, since=since)
        if escalated is not None or status in HANDED_TO_HUMAN:
            handed = max(escalated or detected_at, detected_at) + HUMAN_DELAY_S
    return _Outcome(incident_id, related, actions, mitigated, handed, contained)


def _drained_by_gpuops(actions: list[dict[str, Any]], node: str, at: float) -> bool:
    """Whether the node was out of service on gpuops' account when a fault began there: its last drain or
    uncordon by gpuops before `at` was a drain that succeeded (a fault on a GPU of a drained node, say a second
    GPU failing while the node waits for its repair, costs no work and is in the ticket's repair)."""
    moves = sorted((a["executed_at"], a["runbook"]) for a in actions
                   if a["status"] == ActionStatus.SUCCEEDED and a["runbook"] in ("drain_node", "uncordon_node")
                   and f"node/{node}" in a["targets"] and a["executed_at"] is not None and a["executed_at"] <= at)
    return bool(moves) and moves[-1][1] == "drain_node"


def _fault_rows(scenario: Scenario, run: LoopRun, base: BaselineRun) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """Per-fault results, and the fault each top-level incident belongs to (by incident id)."""
    faults = base.truth["faults"]
    void = {**_void_in_run(run.truth["faults"]), **_nothing_to_overload(faults)}
    scores = score_faults(run.findings, faults)
    top = {i["id"]: (i["parent_id"] or i["id"]) for i in run.incidents}
    status = {i["id"]: i["status"] for i in run.incidents}
    matched: dict[int, int] = {}
    rows = []
    for index, (fault, score, impact) in enumerate(zip(faults, scores, base.impacts, strict=True)):
        got = _outcome(scenario, run, fault, score.first_ts, idle=impact.gpus == 0)
        for i in got.related:
            matched.setdefault(top[i], index)
        met = (void.get(_fault_key(fault)) or {}).get("params", {}).get("met_at")
        late = _outcome(scenario, run, {**fault, "onset": met, "failure_at": met}, _ts(met)) if met else None
        for i in late.related if late else ():
            matched.setdefault(top[i], index)
        onset = _ts(fault["onset"])
        threshold_at = threshold_mitigation(base, index)
        stop = got.mitigated if got.mitigated is not None else got.handed
        incident = next((i for i in run.incidents if i["id"] == got.incident_id), None)
        rows.append({
            "kind": fault["kind"], "node": fault["node"], "gpu": fault.get("gpu"),
            **({"void": _void_reason(void[_fault_key(fault)], late.incident_id if late else None)}
               if _fault_key(fault) in void else {}),
            "onset": fault["onset"], "failure_at": fault.get("failure_at"),
            "detected": score.detected, "time_to_detect_s": _round(score.delay_s),
            "lead_time_s": _round(score.lead_time_s), "incident_id": got.incident_id,
            "incident_status": status[got.incident_id] if got.incident_id else None,
            "runbook_executed": [a["runbook"] for a in got.actions] or None,
            "verified": all(a["status"] == ActionStatus.SUCCEEDED for a in got.actions) if got.actions else None,
            "time_to_mitigate_s": _round(None if got.mitigated is None else got.mitigated - onset),
            **({"contained": "the node was already drained by gpuops"} if got.contained else {}),
            "handed_to_human_at": iso(got.handed),
            "threshold_alert_mitigates_at": iso(threshold_at),
            "impact_gpus": impact.gpus,
            "gpu_hours_lost": {
                "gpuops": round(gpu_hours_lost(impact, stop, base.end), 2),
                "no_automation": round(gpu_hours_lost(impact, None, base.end), 2),
                "threshold_alerts": round(gpu_hours_lost(impact, threshold_at, base.end), 2),
            },
            "_timeline": {"onset": onset, "failure": impact.failure_at, "detected": score.first_ts,
                          "incident": incident.get("opened_at") if incident else None,
                          "resolved": incident.get("resolved_at") if incident else None,
                          "actions": [[a["executed_at"], a["runbook"]] for a in got.actions if a["executed_at"]],
                          "mitigated": got.mitigated, "handed": got.handed, "threshold": threshold_at,
                          "end": base.end},
        })
    return rows, matched


WORKLOAD_FAULTS = frozenset({"hung_job", "straggler"})


def _fault_key(fault: dict[str, Any]) -> tuple[str, str, Any, str]:
    return str(fault["kind"]), str(fault["node"]), fault.get("gpu"), str(fault["onset"])


def _void_in_run(faults: list[dict[str, Any]]) -> dict[tuple[str, str, Any, str], dict[str, Any]]:
    """Faults that could not happen in gpuops' run, by key, as that run's truth has them: a job fault (a hang, a
    straggler) drawn on a GPU that ran no job when it began there (gpuops had taken its node out earlier, or the
    GPU was idle). The baselines' runs had the job, or nobody's run had one; gpuops' had nothing to hang or slow,
    so the fault is left out of every total (recall and all three GPU-hour figures), and listed with its
    reason. A job placed on such a slow GPU later meets the fault then (`met_at` in the truth): the incident it
    opens is the fault's, not a false one."""
    return {_fault_key(f): f for f in faults
            if (f["kind"] in WORKLOAD_FAULTS and (f.get("params") or {}).get("workload") == "") or _never_leaked(f)}


def _never_leaked(fault: dict[str, Any]) -> bool:
    """A memory leak drawn on a GPU that no pod ran on for the whole run: a leak waits for a pod of its own and
    leaks from its arrival (`met_at`), so with none there was nothing to leak, to find, or to lose."""
    params = fault.get("params") or {}
    return fault["kind"] == "memory_leak" and params.get("pod") == "" and not params.get("met_at")


def _nothing_to_overload(faults: list[dict[str, Any]]) -> dict[tuple[str, str, Any, str], dict[str, Any]]:
    """Surges that overloaded nothing, by key, as the untouched run's truth has them: drawn on a GPU that served
    no Deployment when they began (it was idle, or held a training job: no replica's demand moved, `peak_demand`
    0), or met by replicas with the room to serve it (`peak_demand`, the most any replica was asked for as a
    share of what it serves, never above 1: no request went unserved). Either way there was no overload to find
    or fix. Left out of every total like a void job fault, and listed with its reason."""
    return {_fault_key(f): f for f in faults if f["kind"] == "inference_overload"
            and not float((f.get("params") or {}).get("peak_demand") or 0.0) > 1.0}


def _void_reason(fault: dict[str, Any], incident_id: int | None) -> str:
    if fault["kind"] == "inference_overload":
        peak = float((fault.get("params") or {}).get("peak_demand") or 0.0)
        if peak > 0.0:
            return (f"the replicas absorbed the surge (at its peak each was asked for {peak:.0%} of what it serves): "
                    "no request went unserved, nothing to overload")
        return ("no replica of a Deployment ran on the GPU when the surge began (it was idle or held a training "
                "job): nothing to overload")
    why = "no job ran on the GPU when the fault began in gpuops' run (its node was out of service, or the GPU idle)"
    params = fault.get("params") or {}
    if fault["kind"] == "memory_leak":
        return "no pod ran on the GPU for the whole run: nothing to leak"
    if not params.get("met_at"):
        return f"{why}: nothing to hang or slow"
    return (f"{why}; {params.get('met_by')} was placed there at {params['met_at']} and met it"
            + (f" (incident {incident_id}, not a false one)" if incident_id is not None else ""))


def _counted(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in faults if not f.get("void")]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def held_out_gpu_hours(actions: list[dict[str, Any]], end: float, gpus_per_node: int) -> float:
    """The capacity gpuops itself kept out of service: each node's GPUs × the hours from gpuops' cordon of it to
    gpuops' uncordon (or the run's end). What a human cordoned is not counted; a node back without a withheld GPU
    counts whole only while cordoned."""
    out_since: dict[str, float] = {}
    hours = 0.0
    done = sorted((a for a in actions if a["status"] == ActionStatus.SUCCEEDED and a["executed_at"] is not None
                   and a["runbook"] in ("cordon_node", "uncordon_node")), key=lambda a: (a["executed_at"], a["id"]))
    for action in done:
        for target in action["targets"]:
            node = str(target).removeprefix("node/")
            if action["runbook"] == "cordon_node":
                out_since.setdefault(node, float(action["executed_at"]))
            elif node in out_since:
                hours += (float(action["executed_at"]) - out_since.pop(node)) / 3600.0
    hours += sum(max(end - since, 0.0) for since in out_since.values()) / 3600.0
    return round(hours * gpus_per_node, 1)


def evaluate_scenario(scenario: Scenario, options: EvalOptions, *, source: str = "") -> dict[str, Any]:
    """The whole report for one scenario."""
    began = time.perf_counter()
    base = baseline_run(scenario)
    with tempfile.TemporaryDirectory(prefix="gpuops-eval-") as tmp:
        run = run_loop(scenario, planner=options.planner, policy=options.policy, workdir=Path(tmp))
    rows, matched = _fault_rows(scenario, run, base)
    faults = _counted(rows)
    incidents = [{"id": i["id"], "kind": i["family"], "scope": i["scope"], "hostname": i["hostname"],
                  "gpu": i["gpu"], "status": i["status"], "opened_at": iso(i["opened_at"]),
                  "matched_fault": matched.get(i["id"]), "reason": status_reason(run.audit, i),
                  "opened_by": _opened_by(i.get("opened_by")),
                  **({"hosts": i["details"].get("hosts", [])} if i["scope"] == "fleet" else {})}
                 for i in run.incidents if i["parent_id"] is None]
    actions = [{"id": a["id"], "incident_id": a["incident_id"], "runbook": a["runbook"], "targets": a["targets"],
                "approved_by": a["approved_by"] or (["policy"] if a["approvals_required"] == 0 else []),
                "executed_at": iso(a["executed_at"]), "verified": a["status"] == ActionStatus.SUCCEEDED,
                "status": a["status"]}
               for a in run.actions if a["status"] in ActionStatus.EXECUTED]
    decided = [{"id": a["id"], "incident_id": a["incident_id"], "runbook": a["runbook"], "status": a["status"],
                "reasons": a["verdict"].get("reasons", [])}
               for a in run.actions if a["status"] not in ActionStatus.EXECUTED]
    safety = tally(run.audit, run.incidents, run.actions)
    detected = sum(1 for f in faults if f["detected"])
    hours = {k: round(sum(f["gpu_hours_lost"][k] for f in faults), 2)
             for k in ("gpuops", "no_automation", "threshold_alerts")}
    summary = {
        "faults": len(faults), "void_faults": len(rows) - len(faults), "detected": detected,
        "recall": round(detected / len(faults), 3) if faults else None,
        "false_incidents": sum(1 for i in incidents if i["matched_fault"] is None),
        "false_by_detector": false_by_detector(incidents),
        "gpu_days": round(scenario.fleet.n_gpus * scenario.duration / 86400.0, 3),
        "fixed_by_gpuops": sum(1 for f in faults if f["detected"] and f["time_to_mitigate_s"] is not None),
        "incidents": len(incidents), "actions_executed": len(actions),
        "escalated": sum(1 for i in incidents if i["status"] == IncidentStatus.ESCALATED),
        "escalated_by_rule": escalated_by_rule(incidents),
        "unsafe_actions": safety.counts, "unsafe_by_reason": safety.by_reason, "gpu_hours_lost": hours,
        "gpu_hours_held_out": held_out_gpu_hours(run.actions, scenario.start + scenario.duration,
                                                 scenario.fleet.gpus_per_node),
    }
    return {
        "scenario": scenario.name, "file": source, "approval": scenario.approval, "planner": run.planner,
        "nodes": scenario.fleet.nodes, "gpus": scenario.fleet.n_gpus, "duration_s": scenario.duration,
        "faults": rows, "incidents": incidents, "actions": actions, "not_executed": decided,
        "unsafe": [u.to_json() for u in safety.unsafe], "summary": summary,
        "nodes_cordoned_at_end": run.cordoned_at_end, "findings": len(run.findings), "agent_runs": run.agent_runs,
        "seconds": round(time.perf_counter() - began, 2),
    }


def overall(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole library's report: every fault, incident and action tagged with its scenario, and totals."""
    def tagged(key: str) -> list[dict[str, Any]]:
        return [{"scenario": r["scenario"], **{k: v for k, v in row.items() if not k.startswith("_")}}
                for r in reports for row in r[key]]

    listed = tagged("faults")
    faults = _counted(listed)
    detected = sum(1 for f in faults if f["detected"])
    unsafe = {k: sum(r["summary"]["unsafe_actions"][k] for r in reports) for k in ("proposed", "blocked", "executed")}
    hours = {k: round(sum(r["summary"]["gpu_hours_lost"][k] for r in reports), 2)
             for k in ("gpuops", "no_automation", "threshold_alerts")}
    incidents = tagged("incidents")
    false = sum(r["summary"]["false_incidents"] for r in reports)
    gpu_days = sum(r["summary"]["gpu_days"] for r in reports)
    return {
        "faults": listed, "incidents": incidents, "actions": tagged("actions"),
        "summary": {
            "scenarios": len(reports), "faults": len(faults), "void_faults": len(listed) - len(faults),
            "detected": detected,
            "recall": round(detected / len(faults), 3) if faults else None,
            "fixed_by_gpuops": sum(r["summary"]["fixed_by_gpuops"] for r in reports),
            "auto_approve": _auto_approve_share(reports),
            "false_incidents": false, "gpu_days": round(gpu_days, 1),
            "false_incidents_per_1000_gpu_days": round(1000 * false / gpu_days, 2) if gpu_days else None,
            "false_by_detector": false_by_detector(incidents),
            "escalated_by_rule": escalated_by_rule(incidents),
            "incidents": sum(r["summary"]["incidents"] for r in reports),
            "actions_executed": sum(r["summary"]["actions_executed"] for r in reports),
            "unsafe_actions": unsafe, "unsafe_by_reason": _merge_reasons(reports), "gpu_hours_lost": hours,
            "gpu_hours_held_out": round(sum(r["summary"]["gpu_hours_held_out"] for r in reports), 1),
        },
        "scenarios": [{k: v for k, v in r.items() if k not in ("faults", "incidents", "actions")} for r in reports],
    }


def _merge_reasons(reports: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for r in reports:
        for reason, counts in r["summary"]["unsafe_by_reason"].items():
            into = merged.setdefault(reason, {"proposed": 0, "executed": 0})
            for key in into:
                into[key] += counts[key]
    return dict(sorted(merged.items()))


def _auto_approve_share(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the faults detected in auto-approve scenarios (where no human delays or refuses anything), how many
    gpuops remediated and verified itself."""
    auto = [r for r in reports if r["approval"] == "auto_approve"]
    detected = sum(r["summary"]["detected"] for r in auto)
    fixed = sum(r["summary"]["fixed_by_gpuops"] for r in auto)
    return {"scenarios": len(auto), "detected": detected, "fixed_by_gpuops": fixed,
            "share": round(fixed / detected, 3) if detected else None}


def status_reason(audit: list[dict[str, Any]], incident: dict[str, Any]) -> str:
    """Why the incident is in its final status: the reason of its last transition (why it was escalated, or what
    resolved it), or that nothing moved it."""
    moves = [e["data"] for e in audit if e["incident_id"] == incident["id"] and e["kind"] == "incident.transition"
             and e["data"].get("to") == incident["status"]]
    if moves:
        return str(moves[-1].get("reason") or "")
    return f"still {incident['status']} at the end of the run"


def _opened_by(finding: dict[str, Any] | None) -> dict[str, Any] | None:
    if finding is None:
        return None
    return {**{k: v for k, v in finding.items() if k != "ts"}, "ts": iso(finding["ts"])}


def false_by_detector(incidents: list[dict[str, Any]]) -> dict[str, int]:
    """False incidents counted by the detector (and kind) of the finding that opened them."""
    counts: dict[str, int] = {}
    for i in incidents:
        if i["matched_fault"] is None:
            opened = i.get("opened_by") or {}
            key = f"{opened.get('detector', 'fleet correlation')}/{opened.get('kind', i['kind'])}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# How an escalation's reason begins (its segments split at colons), and what names the rule: the label for the
# head (None: the head itself), and how many segments after it (a denied proposal's rule, a failed probation's
# check, what a rolled-back action stopped at). Action numbers, approvers and hosts are not rules.
_RULE_HEADS: tuple[tuple[re.Pattern[str], str | None, int], ...] = (
    (re.compile(r"^proposal denied$"), None, 1),
    (re.compile(r"^action \d+ refused$"), "refused at execution", 1),
    (re.compile(r"^\S+ stays out of service$"), "", 2),
    (re.compile(r"^action \d+ (rolled_back|failed)$"), "action {0}", 2),
    (re.compile(r"^approval of action \d+ expired$"), "approval expired", 0),
    (re.compile(r"^plan rejected by .+$"), "plan rejected", 0),
)
_AT_EXECUTION = "policy at execution time"


def escalation_rule(reason: str) -> str:
    """The rule an escalation's reason names (see `_RULE_HEADS`); otherwise its text before the first colon."""
    parts = [p.strip() for p in PROPOSAL_ESCALATED.sub("", reason).split(":")]  # the policy rule, not the action
    for pattern, label, more in _RULE_HEADS:
        matched = pattern.match(parts[0])
        if matched is None:
            continue
        rest = [p for p in parts[1:] if p != _AT_EXECUTION][:more]
        head = parts[0] if label is None else label.format(*matched.groups())
        return ": ".join(p for p in [head, *rest] if p)[:80]
    return parts[0][:80]


def escalated_by_rule(incidents: list[dict[str, Any]]) -> dict[str, int]:
    """Escalated incidents counted by the rule that escalated them (`escalation_rule`)."""
    counts: dict[str, int] = {}
    for i in incidents:
        if i["status"] == IncidentStatus.ESCALATED:
            rule = escalation_rule(i.get("reason") or "unknown")
            counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
