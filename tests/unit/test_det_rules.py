"""The hard-signal rules and the XID catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from detectors import metrics as m
from detectors.findings import Finding
from detectors.frame import FleetFrame
from detectors.pipeline import DetectionCycle
from detectors.rules import LevelRule, default_rules
from detectors.stream import CycleView
from detectors.xid import XID_CATALOGUE, lookup
from tests.unit import det_synth


def run_rules(f: FleetFrame) -> list[Finding]:
    return DetectionCycle(stages=default_rules()).update(f)


def test_catalogue_actions_follow_nvidia_groups() -> None:
    groups = {
        "restart_application": [13, 31, 68, 69, 94],
        "count_and_trend": [43, 63, 92, 121],
        "reset_gpu": [46, 62, 64, 95, 109, 119, 120, 136, 140, 143, 155, 156, 158],
        "reboot_node": [79, 160],
        "nvidia_workflow": [45, 48, 74, *range(144, 151)],
        "report": [61],
    }
    for action, codes in groups.items():
        for code in codes:
            assert XID_CATALOGUE[code].action == action, code
    assert lookup(79).kind == "gpu_lost" and lookup(48).kind == "ecc"
    unknown = lookup(9999)
    assert unknown.action == "report" and unknown.severity == "warning"


def test_healthy_fleet_raises_no_rule_findings() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    assert run_rules(det_synth.frame(ts, met, gpus, nodes, nm)) == []


def test_xid_change_is_one_event_with_its_catalogue_entry() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    met[m.XID_ERRORS][5, 100:] = 79
    met[m.XID_ERRORS][6, 50:] = 13
    met[m.XID_ERRORS][6, 80] = np.nan  # a missing sample is no new event
    found = [f for f in run_rules(det_synth.frame(ts, met, gpus, nodes, nm)) if f.detector == "rules.xid"]
    assert [(f.gpu, f.hostname, f.ts, f.evidence["xid"]) for f in found] == [
        (6, "gpu-node-001", ts[50], 13), (5, "gpu-node-001", ts[100], 79)]
    assert found[1].kind == "gpu_lost" and found[1].severity == "critical"
    assert found[1].evidence["action"] == "reboot_node"


def test_count_and_trend_xids_escalate_when_repeated() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    x = met[m.XID_ERRORS]
    for k, t in enumerate((10, 20, 30)):
        x[3, t:] = 43 if k % 2 == 0 else 0
    x[3, 20:30] = 0
    found = [f for f in run_rules(det_synth.frame(ts, met, gpus, nodes, nm)) if f.detector == "rules.xid"]
    assert [f.severity for f in found] == ["info", "info"]
    x[3, 40:] = 0
    x[3, 45:] = 43
    found = [f for f in run_rules(det_synth.frame(ts, met, gpus, nodes, nm)) if f.detector == "rules.xid"]
    assert [f.severity for f in found] == ["info", "info", "warning"]
    assert found[-1].evidence["count_in_window"] == 3


def test_dbe_increment_and_row_remap_failure_are_critical() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    met[m.ECC_DBE_VOL_TOTAL][2, 70:] = 1
    met[m.ECC_DBE_VOL_TOTAL][2, 71] = np.nan
    met[m.ROW_REMAP_FAILURE][9, 120:] = 1
    met[m.UNCORRECTABLE_REMAPPED_ROWS][9, 110:] = 3
    found = run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
    assert [(f.detector, f.gpu, f.severity, f.ts) for f in found] == [
        ("rules.ecc_dbe", 2, "critical", ts[70]),
        ("rules.remapped_rows", 1, "warning", ts[110]),
        ("rules.row_remap_failure", 1, "critical", ts[120]),
    ]
    assert found[0].evidence["increase"] == 1.0


def test_gpu_whose_series_vanish_is_lost_once_after_grace() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    for arr in met.values():
        arr[4, 150:] = np.nan
    found = run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
    # seen last at 149; one missed scrape (30 s here) is no lost GPU, two in a row are
    assert [(f.kind, f.gpu, f.ts) for f in found] == [("gpu_lost", 4, ts[151])]
    assert found[0].evidence["silent_s"] == 60.0
    ts15, met15, gpus15, nodes15, nm15 = det_synth.healthy(step_s=15.0)
    for arr in met15.values():
        arr[4, 150:] = np.nan
    found = run_rules(det_synth.frame(ts15, met15, gpus15, nodes15, nm15))
    assert [(f.ts, f.evidence["silent_s"]) for f in found] == [(ts15[151], 30.0)]  # two missed at 15 s too


def test_gpu_row_missing_from_later_frames_is_lost() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=2)
    cycle = DetectionCycle(stages=default_rules())
    assert cycle.update(det_synth.frame(ts[:100], {k: v[:, :100] for k, v in met.items()}, gpus)) == []
    only_first = type(gpus)(hostname=gpus.hostname[:1], gpu=gpus.gpu[:1], uuid=gpus.uuid[:1],
                            model_name=gpus.model_name[:1])
    later = det_synth.frame(ts[100:], {k: v[:1, 100:] for k, v in met.items()}, only_first)
    found = cycle.update(later)
    assert [(f.kind, f.gpu, f.uuid, f.evidence["row_in_frame"]) for f in found] == [
        ("gpu_lost", 1, gpus.uuid[1], False)]


def test_node_not_ready_and_temperature_limits() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    nm[m.NODE_READY][2, 60:90] = 0
    met[m.GPU_TEMP][7, 30:40] = 89.0
    met[m.GPU_TEMP][7, 40:42] = 86.0  # inside the hysteresis band: same episode
    met[m.GPU_TEMP][7, 42:45] = 93.0
    found = run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
    assert [(f.detector, f.hostname, f.gpu, f.ts) for f in found] == [
        ("rules.temp_throttle", "gpu-node-001", 7, ts[30]),
        ("rules.temp_throttle_held", "gpu-node-001", 7, ts[40]),  # 30 s samples: five minutes on at ts[40]
        ("rules.temp_shutdown", "gpu-node-001", 7, ts[42]),
        ("rules.node_not_ready", "gpu-node-003", None, ts[60]),
    ]


def test_a_gpu_held_at_its_slowdown_temperature_is_a_persisting_fact_and_a_moments_heat_is_not() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()  # 30 s samples
    temp = met[m.GPU_TEMP]
    temp[2, 20:29] = 88.0    # four and a half minutes over the limit, then cooled: no episode held
    temp[2, 29:] = 80.0
    temp[5, 50:80] = 88.0    # held, through a scrape gap and a dip inside the hysteresis band
    temp[5, 55:58] = np.nan
    temp[5, 60] = 85.0
    temp[9, 100:101] = 95.0  # one sample past shutdown: the instant rules say so, the held rule does not
    found = [f for f in run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
             if f.detector == "rules.temp_throttle_held"]
    assert [(f.gpu, f.ts) for f in found] == [(5, ts[60])]
    assert found[0].evidence["held_s"] == 300.0 and found[0].evidence["persistent"] is True
    assert found[0].kind == "thermal" and found[0].severity == "warning"
    temp[5, 59] = 83.0       # below the band: that episode ends before it has lasted five minutes
    found = [f for f in run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
             if f.detector == "rules.temp_throttle_held"]
    assert [(f.gpu, f.ts) for f in found] == [(5, ts[71])]  # the next begins over the limit, at ts[61]


def test_a_whole_nodes_exporter_falling_silent_is_one_suspicion_not_eight_lost_gpus() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    for arr in met.values():
        arr[8:16, 100:104] = np.nan  # gpu-node-002: a scrape gap of four samples, every GPU at once
        arr[17, 150:] = np.nan       # gpu-node-003 GPU 1 falls off the bus
    found = run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
    assert [(f.hostname, f.gpu, f.severity) for f in found] == [
        ("gpu-node-002", None, "warning"), ("gpu-node-003", 1, "critical")]
    assert found[0].evidence["all_gpus"] == 8 and found[0].evidence["corroborated"] is False


def test_a_node_cordoned_before_it_went_not_ready_is_someones_maintenance() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    nm[m.NODE_UNSCHEDULABLE] = np.zeros_like(nm[m.NODE_READY])
    nm[m.NODE_UNSCHEDULABLE][1, 40:] = 1  # gpu-node-002 cordoned (a driver upgrade), then rebooted
    nm[m.NODE_READY][1, 50:60] = 0
    nm[m.NODE_READY][3, 70:80] = 0        # gpu-node-004 falls over while in service
    nm[m.NODE_UNSCHEDULABLE][0, 90:] = 1  # gpu-node-001: cordoned, drained and rebooted within one scrape
    nm[m.NODE_READY][0, 90:95] = 0
    found = run_rules(det_synth.frame(ts, met, gpus, nodes, nm))
    assert [(f.hostname, f.severity, f.evidence["cordoned_before"]) for f in found] == [
        ("gpu-node-002", "warning", True), ("gpu-node-004", "critical", False), ("gpu-node-001", "warning", True)]
    assert found[0].evidence["corroborated"] is False


def test_missing_series_degrade_without_error() -> None:
    ts, met, gpus, _, _ = det_synth.healthy()
    assert run_rules(det_synth.frame(ts, {m.GPU_TEMP: met[m.GPU_TEMP]}, gpus)) == []


@pytest.mark.parametrize("bad", ["inf", "int", "dup"])
def test_malformed_frames_are_refused_and_nothing_is_consumed(bad: str) -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy(nodes=1, gpus_per_node=2)
    cycle = DetectionCycle(stages=default_rules())
    good = det_synth.frame(ts, dict(met), gpus, nodes, nm)
    broken = dict(met)
    labels = gpus
    if bad == "inf":
        broken[m.GPU_TEMP] = met[m.GPU_TEMP].copy()
        broken[m.GPU_TEMP][1, 3] = np.inf
    elif bad == "int":
        broken[m.GPU_TEMP] = met[m.GPU_TEMP].astype(np.int64)  # type: ignore[assignment]
    else:
        labels = type(gpus)(hostname=(gpus.hostname[0],) * 2, gpu=(0, 0), uuid=gpus.uuid,
                            model_name=gpus.model_name)
    with pytest.raises(ValueError, match=r"infinite|dtype|duplicate"):
        cycle.update(FleetFrame(timestamps=ts, gpus=labels, metrics=broken, nodes=nodes, node_metrics=nm))
    assert cycle.last_ts == -np.inf
    met[m.ECC_DBE_VOL_TOTAL][0, 10:] = 1
    assert [f.detector for f in cycle.update(good)] == ["rules.ecc_dbe"]


def _replays(rate_per_min: np.ndarray, step_s: float = 30.0) -> np.ndarray:
    """A PCIe replay counter whose rate per minute is `rate_per_min[t]`, as whole replays."""
    return np.floor(np.cumsum(rate_per_min * step_s / 60.0))


def _pcie_findings(met: dict[str, np.ndarray], ts: np.ndarray, gpus: object, nodes: tuple[str, ...],
                   nm: dict[str, np.ndarray], chunk: int | None = None) -> list[Finding]:
    whole = det_synth.frame(ts, met, gpus, nodes, nm)  # type: ignore[arg-type]
    cycle = DetectionCycle(stages=default_rules())
    frames = [whole] if chunk is None else det_synth.chunks(whole, chunk, overlap=2)
    return [f for fr in frames for f in cycle.update(fr) if f.detector == "rules.pcie_replay_rate"]


def test_pcie_replays_above_dcgms_limit_for_five_minutes_are_one_persistent_finding() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()  # 30 s samples; background 0.2 replays/min
    rate = np.zeros(ts.size)
    rate[60:100] = 30.0  # a marginal link: 30 replays/min for 20 min, then it quiets
    met[m.PCIE_REPLAY_COUNTER][3] += _replays(rate)
    below = np.zeros(ts.size)
    below[60:200] = 6.0  # under DCGM's 8/min for 70 min: not a finding
    met[m.PCIE_REPLAY_COUNTER][4] += _replays(below)
    met[m.PCIE_REPLAY_COUNTER][5, 50:] += 400.0  # one burst in one sample: no rate held for five minutes
    found = _pcie_findings(met, ts, gpus, nodes, nm)
    assert [(f.gpu, f.kind, f.severity) for f in found] == [(3, "pcie", "warning")]
    f = found[0]
    assert ts[60] + 120.0 <= f.ts <= ts[60] + 300.0  # the median of the last five minutes turned
    assert f.evidence["persistent"] is True and f.evidence["limit_per_s"] == pytest.approx(8 / 60)
    assert f.evidence["rate_per_s"] > 8 / 60 and f.evidence["window_s"] == 300.0
    assert "DCGM" in f.evidence["source"]


def test_pcie_rate_rule_rearms_after_the_link_quiets_and_ignores_resets_and_gaps() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy()
    rate = np.zeros(ts.size)
    rate[20:60] = 30.0
    rate[150:200] = 30.0  # a second episode after 45 quiet minutes
    counter = _replays(rate)
    counter[40:] -= counter[40]  # the driver reloaded mid-storm: the counter starts again from 0
    met[m.PCIE_REPLAY_COUNTER][2] = counter
    met[m.PCIE_REPLAY_COUNTER][2, 45:47] = np.nan  # a scrape gap inside the storm
    found = _pcie_findings(met, ts, gpus, nodes, nm)
    assert [f.gpu for f in found] == [2, 2]
    assert ts[20] < found[0].ts < ts[60] and ts[150] < found[1].ts < ts[200]
    # streamed in chunks that overlap, the same findings at the same times
    assert [(f.gpu, f.ts) for f in _pcie_findings(met, ts, gpus, nodes, nm, chunk=7)] == \
        [(f.gpu, f.ts) for f in found]


def test_a_cycle_saved_before_a_rule_existed_gains_it_when_restored() -> None:
    from detectors.pipeline import default_stages

    old = DetectionCycle([s for s in default_stages() if s.name not in ("rules.xid", "rules.pcie_replay_rate")])
    names = [s.name for s in DetectionCycle.from_state(old.state_bytes()).stages]
    assert sorted(names) == sorted(s.name for s in default_stages())
    assert names.index("rules.pcie_replay_rate") < names.index("fabric")  # with the rules, before the models
    assert names[0] == "rules.xid"


def test_a_cycle_saved_before_a_detector_existed_gains_it_in_order_and_keeps_the_rest() -> None:
    """A daemon upgraded in place restores its shards' detectors from the store: a detector added since (the
    burst and climb tests on the error counters) joins where the default order puts it, and every stage the state
    holds, a learned risk model beside the defaults included, keeps its state."""
    from detectors.pipeline import default_stages

    newer = ("burst.", "climb.", "forecast")  # the last of the defaults too
    ts, met, gpus, nodes, nm = det_synth.healthy()
    old = DetectionCycle([*(s for s in default_stages() if not s.name.startswith(newer)), _Extra()])
    old.update(det_synth.frame(ts[:50], {k: v[:, :50] for k, v in met.items()}, gpus, nodes,
                               {k: v[:, :50] for k, v in nm.items()}))
    restored = DetectionCycle.from_state(old.state_bytes())
    names = [s.name for s in restored.stages]
    assert names == [*(s.name for s in default_stages()), "extra"]
    cusum = next(s for s in restored.stages if s.name == "cusum.DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
    assert np.isfinite(cusum._last).any()  # learnt before it was saved
    assert next(s for s in restored.stages if s.name == "extra").seen == 50
    restored.update(det_synth.frame(ts, met, gpus, nodes, nm))  # and the new ones run


@dataclass
class _Extra:
    """A stage beside the defaults (as the learned risk model is): counts the samples it saw."""

    name: str = "extra"
    seen: int = 0

    def update(self, view: CycleView) -> list[Finding]:
        self.seen += view.n_new
        return []


def test_a_level_rule_and_a_job_memory_pickled_before_their_newer_fields_restore_and_run() -> None:
    import pickle

    from detectors.pipeline import JobMemory

    rule = next(s for s in default_rules() if s.name == "rules.temp_throttle")
    state = dict(rule.__dict__)
    for name in ("_since", "_count", "hold_s", "min_samples"):
        del state[name]
    old = LevelRule.__new__(LevelRule)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    ts, met, gpus, nodes, nm = det_synth.healthy()
    met[m.GPU_TEMP][7, 30:40] = 89.0
    found = DetectionCycle(stages=[restored]).update(det_synth.frame(ts, met, gpus, nodes, nm))
    assert [(f.gpu, f.ts) for f in found] == [(7, ts[30])] and restored.hold_s == 0.0
    memory = JobMemory()
    memory.observe(gpus, 0.0)
    del memory.__dict__["pods"]
    old_memory = pickle.loads(pickle.dumps(memory))
    assert old_memory.pods == {}
    old_memory.observe(gpus, 1.0)  # the same labels as before it was saved: its pods are worked out all the same
    fresh = JobMemory()
    fresh.observe(gpus, 1.0)
    assert fresh.pods and old_memory.pods == fresh.pods
