"""Scoring findings against a scenario's ground truth: was each fault found, how soon after onset, how long
before failure. Pure: findings and truth in, numbers out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from detectors.findings import Finding

# Which finding kinds count as having found each fault kind of the simulator. A bank running out of spare rows
# is memory failing: the correctable errors it logs on the way (`ecc`) find it as well as its remaps do.
EXPECTED_KINDS: Mapping[str, frozenset[str]] = {
    "xid79": frozenset({"gpu_lost", "xid"}),
    "xid48_dbe": frozenset({"ecc", "xid"}),
    "ecc_sbe_storm": frozenset({"ecc", "xid"}),
    "row_remap_exhaustion": frozenset({"row_remap", "ecc", "xid"}),
    "thermal_runaway": frozenset({"thermal"}),
    "nvlink_degradation": frozenset({"nvlink", "xid"}),
    "gsp_timeout": frozenset({"xid", "gpu_lost"}),
    "node_not_ready": frozenset({"node_not_ready"}),
    "straggler": frozenset({"straggler"}),
    "hung_job": frozenset({"hung_job"}),
    "memory_leak": frozenset({"memory_leak"}),
    "pcie_replay_storm": frozenset({"pcie"}),
    "inference_overload": frozenset({"overload"}),
    "ib_link_down": frozenset({"fabric"}),
    "ib_link_flap": frozenset({"fabric"}),
    "ib_link_degraded": frozenset({"fabric"}),
    "ib_symbol_errors": frozenset({"fabric"}),
    "nic_lost": frozenset({"fabric"}),
}
ABRUPT = frozenset({"xid79", "xid48_dbe", "gsp_timeout", "node_not_ready"})


def _ts(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class FaultScore:
    kind: str
    node: str
    gpu: int | None
    onset: float
    failure_at: float | None
    forecastable: bool
    detected: bool
    first_ts: float | None
    delay_s: float | None      # first matching finding − onset
    lead_time_s: float | None  # failure − first matching finding (forecastable faults)


def same_workload(fault: Mapping[str, Any], workload: object) -> bool:
    """Whether `workload` (`namespace/name`) is the one a workload-level fault names (an overload's
    deployment, a hung job's workload)."""
    params = fault.get("params") or {}
    wanted = params.get("deployment") or params.get("workload")
    return bool(wanted) and isinstance(workload, str) and workload.rpartition("/")[2] == wanted


def matches(fault: Mapping[str, Any], finding: Finding) -> bool:
    kinds = EXPECTED_KINDS.get(str(fault["kind"]), frozenset())
    if finding.kind not in kinds:
        return False
    if same_workload(fault, finding.evidence.get("deployment") or finding.evidence.get("job")):
        return True  # an overload or a hang is the workload's, whichever of its GPUs shows it
    if finding.hostname != fault["node"]:
        return False
    return fault.get("gpu") is None or finding.gpu is None or finding.gpu == fault["gpu"]


def score_faults(findings: Sequence[Finding], faults: Iterable[Mapping[str, Any]]) -> list[FaultScore]:
    """One score per injected fault: its first matching finding at or after onset."""
    ordered = sorted(findings, key=lambda f: f.ts)
    scores = []
    for fault in faults:
        onset = _ts(fault["onset"])
        failure = _ts(fault["failure_at"]) if fault.get("failure_at") else None
        first = next((f for f in ordered if f.ts >= onset and matches(fault, f)), None)
        first_ts = first.ts if first else None
        scores.append(FaultScore(
            kind=str(fault["kind"]), node=str(fault["node"]), gpu=fault.get("gpu"), onset=onset, failure_at=failure,
            forecastable=bool(fault.get("forecastable")), detected=first is not None, first_ts=first_ts,
            delay_s=None if first_ts is None else first_ts - onset,
            lead_time_s=None if first_ts is None or failure is None else failure - first_ts))
    return scores


def summarise(scores: Sequence[FaultScore], step_s: float, lead_goal_s: float = 900.0) -> dict[str, Any]:
    """The accuracy goals' figures: abrupt recall within two steps, forecastable faults flagged in time."""
    abrupt = [s for s in scores if s.kind in ABRUPT]
    abrupt_fast = [s for s in abrupt if s.detected and s.delay_s is not None and s.delay_s <= 2 * step_s]
    forecastable = [s for s in scores if s.forecastable and s.failure_at is not None]
    early = [s for s in forecastable if s.lead_time_s is not None and s.lead_time_s >= lead_goal_s]
    by_kind: dict[str, dict[str, Any]] = {}
    for s in scores:
        entry = by_kind.setdefault(s.kind, {"faults": 0, "detected": 0, "delays_s": []})
        entry["faults"] += 1
        entry["detected"] += int(s.detected)
        if s.delay_s is not None:
            entry["delays_s"].append(round(s.delay_s, 1))
    return {
        "faults": len(scores),
        "recall": _ratio(sum(s.detected for s in scores), len(scores)),
        "abrupt_recall_within_two_steps": _ratio(len(abrupt_fast), len(abrupt)),
        "forecastable_flagged_15min_before": _ratio(len(early), len(forecastable)),
        "by_kind": by_kind,
    }


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else round(num / den, 4)
