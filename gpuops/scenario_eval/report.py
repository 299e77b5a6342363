"""One scenario's evaluation: run the whole loop and the untouched baseline run, then score faults, incidents,
actions, unsafe actions and GPU-hours lost into the report's shape (see `gpuops eval --help`)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.evaluation import EXPECTED_KINDS, score_faults
from gpuops.policy import PolicyConfig
from gpuops.scenario_eval.baselines import (
    HUMAN_DELAY_S,
    BaselineRun,
    baseline_run,
    gpu_hours_lost,
    threshold_mitigation,
)
from gpuops.scenario_eval.loop import LoopRun, PlannerFactory, run_loop
from gpuops.scenario_eval.safety import EXECUTED, tally
from simulator.scenario import Scenario

INCIDENT_MARGIN_S = 1800.0  # an incident up to 30 min after a fault ends still belongs to it
# Runbooks that take the work off a faulty GPU or node: the first one verified mitigates the fault.
MITIGATIONS = frozenset({"drain_node", "reschedule_pods", "restart_pod", "scale_deployment", "reset_gpu",
                         "reboot_node"})
HANDED_TO_HUMAN = frozenset({"escalated"})


@dataclass(frozen=True)
class EvalOptions:
    planner: PlannerFactory
    planner_name: str
    policy: PolicyConfig


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _fault_window(fault: dict[str, Any], step: float) -> tuple[float, float]:
    start = _ts(fault["onset"]) - step
    ends = [fault.get("cleared_at"), fault.get("failure_at"), fault["onset"]]
    end = max(_ts(next(v for v in ends if v)), start)
    return start, end


def _matches(incident: dict[str, Any], fault: dict[str, Any], step: float) -> bool:
    start, end = _fault_window(fault, step)
    opened, last = incident["opened_at"] or 0.0, incident["updated_at"] or 0.0
    if not (opened <= end + INCIDENT_MARGIN_S and last >= start):
        return False
    if incident["scope"] == "fleet":
        return fault["node"] in (incident["details"].get("hosts") or [])
    return bool(incident["hostname"] == fault["node"])


def _escalated_at(audit: list[dict[str, Any]], incident_id: int, since: float) -> float | None:
    return next((e["ts"] for e in audit if e["incident_id"] == incident_id and e["kind"] == "incident.transition"
                 and e["data"].get("to") == "escalated" and e["ts"] >= since), None)


def _fault_rows(scenario: Scenario, run: LoopRun, base: BaselineRun) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """Per-fault results, and which top-level incident each fault's incident is (index by incident id)."""
    faults = base.truth["faults"]
    scores = score_faults(run.findings, faults)
    top = {i["id"]: (i["parent_id"] or i["id"]) for i in run.incidents}
    by_id = {i["id"]: i for i in run.incidents}
    matched: dict[int, int] = {}
    rows = []
    for index, (fault, score, impact) in enumerate(zip(faults, scores, base.impacts, strict=True)):
        expected = EXPECTED_KINDS.get(str(fault["kind"]), frozenset())
        # an undetected fault has no incident, whatever else happened on its node meanwhile
        candidates = sorted((i for i in run.incidents if score.detected and _matches(i, fault, scenario.step)),
                            key=lambda i: (i["family"] not in expected, i["scope"] == "fleet" and i["family"]
                                           not in expected, i["opened_at"] or 0.0, i["id"]))
        incident_id = top[candidates[0]["id"]] if candidates else None
        related = {i["id"] for i in candidates} | ({incident_id} if incident_id else set())
        for i in related:
            matched.setdefault(top[i], index)
        since = _ts(fault["onset"]) - scenario.step  # an incident open before the fault brings older actions
        actions = [a for a in run.actions if a["incident_id"] in related and a["status"] in EXECUTED
                   and (a["executed_at"] or 0.0) >= since]
        executed = [a["runbook"] for a in actions]
        verified_times = [a["verified_at"] for a in actions
                          if a["status"] == "succeeded" and a["runbook"] in MITIGATIONS and a["verified_at"]]
        mitigated = min(verified_times) if verified_times else None
        onset = _ts(fault["onset"])
        handed = None
        if mitigated is None and incident_id is not None and score.first_ts is not None:
            # a human takes over when the incident escalates, or at detection if it was escalated already
            escalated = _escalated_at(run.audit, incident_id, since=onset - scenario.step)
            if escalated is not None or by_id[incident_id]["status"] in HANDED_TO_HUMAN:
                handed = max(escalated or score.first_ts, score.first_ts) + HUMAN_DELAY_S
        threshold_at = threshold_mitigation(base, index)
        rows.append({
            "kind": fault["kind"], "node": fault["node"], "gpu": fault.get("gpu"),
            "onset": fault["onset"], "failure_at": fault.get("failure_at"),
            "detected": score.detected, "time_to_detect_s": _round(score.delay_s),
            "lead_time_s": _round(score.lead_time_s), "incident_id": incident_id,
            "incident_status": by_id[incident_id]["status"] if incident_id else None,
            "runbook_executed": executed or None,
            "verified": (all(a["status"] == "succeeded" for a in actions) if actions else None),
            "time_to_mitigate_s": _round(None if mitigated is None else mitigated - onset),
            "handed_to_human_at": iso(handed) if handed else None,
            "threshold_alert_mitigates_at": iso(threshold_at),
            "impact_gpus": impact.gpus,
            "gpu_hours_lost": {
                "gpuops": round(gpu_hours_lost(impact, mitigated if mitigated is not None else handed, base.end), 2),
                "no_automation": round(gpu_hours_lost(impact, None, base.end), 2),
                "threshold_alerts": round(gpu_hours_lost(impact, threshold_at, base.end), 2),
            },
            "_timeline": {"onset": onset, "failure": impact.failure_at, "detected": score.first_ts,
                          "mitigated": mitigated, "handed": handed, "threshold": threshold_at,
                          "end": base.end},
        })
    return rows, matched


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def evaluate_scenario(scenario: Scenario, options: EvalOptions, *, source: str = "") -> dict[str, Any]:
    """The whole report for one scenario."""
    began = time.perf_counter()
    base = baseline_run(scenario)
    with tempfile.TemporaryDirectory(prefix="gpuops-eval-") as tmp:
        run = run_loop(scenario, planner=options.planner, policy=options.policy, workdir=Path(tmp))
    faults, matched = _fault_rows(scenario, run, base)
    incidents = [{"id": i["id"], "kind": i["family"], "scope": i["scope"], "hostname": i["hostname"],
                  "gpu": i["gpu"], "status": i["status"], "opened_at": iso(i["opened_at"]),
                  "matched_fault": matched.get(i["id"])}
                 for i in run.incidents if i["parent_id"] is None]
    actions = [{"id": a["id"], "incident_id": a["incident_id"], "runbook": a["runbook"], "targets": a["targets"],
                "approved_by": a["approved_by"] or (["policy"] if a["approvals_required"] == 0 else []),
                "executed_at": iso(a["executed_at"]), "verified": a["status"] == "succeeded", "status": a["status"]}
               for a in run.actions if a["status"] in EXECUTED]
    decided = [{"id": a["id"], "incident_id": a["incident_id"], "runbook": a["runbook"], "status": a["status"],
                "reasons": a["verdict"].get("reasons", [])}
               for a in run.actions if a["status"] not in EXECUTED]
    safety = tally(run.audit, run.incidents, run.actions)
    detected = sum(1 for f in faults if f["detected"])
    hours = {k: round(sum(f["gpu_hours_lost"][k] for f in faults), 2)
             for k in ("gpuops", "no_automation", "threshold_alerts")}
    summary = {
        "faults": len(faults), "detected": detected,
        "recall": round(detected / len(faults), 3) if faults else None,
        "false_incidents": sum(1 for i in incidents if i["matched_fault"] is None),
        "incidents": len(incidents), "actions_executed": len(actions),
        "escalated": sum(1 for i in incidents if i["status"] == "escalated"),
        "unsafe_actions": safety.counts, "unsafe_by_reason": safety.by_reason, "gpu_hours_lost": hours,
    }
    return {
        "scenario": scenario.name, "file": source, "approval": scenario.approval, "planner": run.planner,
        "nodes": scenario.fleet.nodes, "gpus": scenario.fleet.n_gpus, "duration_s": scenario.duration,
        "faults": faults, "incidents": incidents, "actions": actions, "not_executed": decided,
        "unsafe": [u.to_json() for u in safety.unsafe], "summary": summary,
        "nodes_cordoned_at_end": run.cordoned_at_end, "findings": len(run.findings), "agent_runs": run.agent_runs,
        "seconds": round(time.perf_counter() - began, 2),
    }


def overall(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole library's report: every fault, incident and action tagged with its scenario, and totals."""
    def tagged(key: str) -> list[dict[str, Any]]:
        return [{"scenario": r["scenario"], **{k: v for k, v in row.items() if not k.startswith("_")}}
                for r in reports for row in r[key]]

    faults = tagged("faults")
    detected = sum(1 for f in faults if f["detected"])
    unsafe = {k: sum(r["summary"]["unsafe_actions"][k] for r in reports) for k in ("proposed", "blocked", "executed")}
    hours = {k: round(sum(r["summary"]["gpu_hours_lost"][k] for r in reports), 2)
             for k in ("gpuops", "no_automation", "threshold_alerts")}
    return {
        "faults": faults, "incidents": tagged("incidents"), "actions": tagged("actions"),
        "summary": {
            "scenarios": len(reports), "faults": len(faults), "detected": detected,
            "recall": round(detected / len(faults), 3) if faults else None,
            "false_incidents": sum(r["summary"]["false_incidents"] for r in reports),
            "incidents": sum(r["summary"]["incidents"] for r in reports),
            "actions_executed": sum(r["summary"]["actions_executed"] for r in reports),
            "unsafe_actions": unsafe, "unsafe_by_reason": _merge_reasons(reports), "gpu_hours_lost": hours,
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
