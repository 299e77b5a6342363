"""Detectors that are right by construction: a hang is busy engines with no real work, never idleness; a
forecast predicts only what the load and the GPU's physics can reach; a clock under power capping is expected;
memory that moves is not a leak; a feature whose series is absent is off."""

from __future__ import annotations

import numpy as np

from detectors import metrics as m
from detectors.anomaly import LoadConditionedClock
from detectors.findings import Finding
from detectors.forecast import FailureForecast, default_targets
from detectors.frame import FleetFrame, FloatArray, GpuLabels
from detectors.peers import PeerComparison
from detectors.pipeline import DetectionCycle
from detectors.rules import Stage
from detectors.stream import samples_in
from tests.unit import det_synth

SPIN = samples_in(PeerComparison().spin_persist_s, 30.0)  # a hang's samples at the tests' 30 s scrape

PROFILING = (m.GR_ENGINE_ACTIVE, m.PIPE_TENSOR_ACTIVE, m.DRAM_ACTIVE)


def run(stages: list[Stage] | None, f: FleetFrame) -> list[Finding]:
    return DetectionCycle(stages=stages).update(f)


def training(steps: int = 400, step_s: float = 30.0) -> tuple[FloatArray, dict[str, FloatArray], GpuLabels]:
    """Two jobs of 16 GPUs on four nodes, computing with their tensor pipes."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, steps=steps, step_s=step_s, jobs=2)
    met[m.PIPE_TENSOR_ACTIVE] = met[m.GR_ENGINE_ACTIVE] * 0.55
    return ts, met, gpus


def pause(met: dict[str, FloatArray], rows: slice, cols: slice) -> None:
    """Every GPU of `rows` near idle with its memory held (a checkpoint, a notebook waiting for its user)."""
    met[m.GPU_UTIL][rows, cols] = 1.0
    met[m.GR_ENGINE_ACTIVE][rows, cols] = 0.01
    met[m.PIPE_TENSOR_ACTIVE][rows, cols] = 0.0
    met[m.POWER_USAGE][rows, cols] = 95.0
    met[m.SM_CLOCK][rows, cols] = 1980.0


def hung(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.kind == "hung_job"]


# --- hung jobs -------------------------------------------------------------------------------------------


def test_checkpoint_pauses_and_evaluation_phases_are_not_hung() -> None:
    ts, met, gpus = training()
    for start, length in ((60, 2), (140, 10), (230, 20), (330, 6)):  # 1 to 10 minutes, every rank at once
        pause(met, slice(16, None), slice(start, start + length))
    evaluation = slice(16, None), slice(280, 320)  # forward passes only: busy, little tensor work, less power
    met[m.GR_ENGINE_ACTIVE][evaluation] = 0.8
    met[m.GPU_UTIL][evaluation] = 80.0
    met[m.PIPE_TENSOR_ACTIVE][evaluation] = 0.15
    met[m.POWER_USAGE][evaluation] = 380.0
    assert hung(run(None, det_synth.frame(ts, met, gpus))) == []


def test_a_long_pause_holding_memory_is_not_hung_either() -> None:
    ts, met, gpus = training()
    pause(met, slice(16, None), slice(150, None))  # the job waits for data for hours, memory held
    assert hung(run([PeerComparison()], det_synth.frame(ts, met, gpus))) == []


def test_an_idle_notebook_holding_memory_is_neither_hung_nor_anomalous() -> None:
    ts, met, gpus = training()
    notebook = 3
    gpus = GpuLabels(hostname=gpus.hostname, gpu=gpus.gpu, uuid=gpus.uuid, model_name=gpus.model_name,
                     pod=tuple("notebook-alice-0" if r == notebook else p for r, p in enumerate(gpus.pod)),
                     namespace=gpus.namespace)
    pause(met, slice(notebook, notebook + 1), slice(None))
    met[m.GPU_TEMP][notebook] = 34 + np.random.default_rng(3).normal(0, 0.5, ts.size)
    met[m.MEMORY_TEMP][notebook] = 38 + np.random.default_rng(4).normal(0, 0.5, ts.size)
    met[m.SM_CLOCK][notebook] = 345.0
    met[m.FB_USED][notebook] = 20_000.0
    found = run(None, det_synth.frame(ts, met, gpus))
    assert [f for f in found if f.gpu == notebook and f.hostname == "gpu-node-001"] == []


def test_a_spinning_collective_is_hung_but_full_power_without_tensor_work_is_other_work() -> None:
    ts, met, gpus = training()
    met[m.PIPE_TENSOR_ACTIVE][16:, 150:] = 0.0  # the collective spins: engines busy, tensor pipes still ...
    met[m.DRAM_ACTIVE] = np.where(met[m.PIPE_TENSOR_ACTIVE] > 0, 0.3, 0.0)  # ... DRAM still ...
    met[m.POWER_USAGE][16:, 150:] = 110.0  # ... near-idle power
    found = hung(run([PeerComparison()], det_synth.frame(ts, met, gpus)))
    first = {(f.hostname, f.gpu): f for f in reversed(found)}
    assert len(first) == 16 and {f.ts for f in first.values()} == {ts[150 + SPIN - 1]}
    evidence = found[0].evidence
    assert evidence["basis"] == "profiling" and evidence["corroborated"] is True
    assert set(evidence["signals"]) == {"engine_pinned", "no_tensor_work", "no_dram_work", "power_near_idle"}

    ts, met, gpus = training()
    met[m.PIPE_TENSOR_ACTIVE][16:, 150:] = 0.0  # tensor pipes still, power as before: CUDA-core work
    assert hung(run([PeerComparison()], det_synth.frame(ts, met, gpus))) == []


def without(met: dict[str, FloatArray], *names: str) -> dict[str, FloatArray]:
    return {k: v for k, v in met.items() if k not in names}


def test_without_profiling_a_hang_needs_pinned_utilisation_at_low_power_for_ten_minutes() -> None:
    ts, met, gpus = training()
    met[m.GPU_UTIL][16:, 150:] = 100.0
    met[m.POWER_USAGE][16:, 150:] = 110.0
    met[m.GPU_UTIL][:16, 150:170] = 100.0  # job train-0 pinned at full power for a while: working
    bare = without(met, *PROFILING)
    found = hung(run([PeerComparison()], det_synth.frame(ts, bare, gpus)))
    ten_minutes = int(600 / 30)
    assert {(f.hostname, f.ts) for f in found if f.ts == ts[150 + ten_minutes]} == {
        (f"gpu-node-00{n}", ts[150 + ten_minutes]) for n in (3, 4)}
    assert min(f.ts for f in found) == ts[150 + ten_minutes]
    assert {f.evidence["job"] for f in found} == {"ml/train-1"}
    assert found[0].evidence["basis"] == "utilisation_and_power"
    assert hung(run([PeerComparison()], det_synth.frame(ts, without(bare, m.POWER_USAGE), gpus))) == []
    pause(met, slice(16, None), slice(150, None))
    assert hung(run([PeerComparison()], det_synth.frame(ts, without(met, *PROFILING), gpus))) == []


# --- thermal forecasts ------------------------------------------------------------------------------------


def diurnal_inference(steps: int = 480, step_s: float = 60.0, seed: int = 7) -> tuple[
        FloatArray, dict[str, FloatArray], GpuLabels]:
    """Node 1 trains at 600 W; node 2 serves inference whose load ramps up through the morning. Temperature
    follows the physics: inlet + R_th × power, through the die's thermal inertia, in whole degrees."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=steps, step_s=step_s, seed=seed)
    rng = np.random.default_rng(seed)
    hours = np.arange(steps) * step_s / 3600
    load = np.clip(0.1 + 0.55 * (hours - 2) / 3, 0.1, 0.65)  # night until 2 h, a 3 h ramp, then the day's level
    serve = slice(8, 16)
    met[m.GPU_UTIL][serve] = 100 * load + rng.normal(0, 1.5, (8, steps))
    met[m.GR_ENGINE_ACTIVE][serve] = met[m.GPU_UTIL][serve] / 100
    met[m.POWER_USAGE][serve] = 70 + 630 * load**0.85 + rng.normal(0, 8, (8, steps))
    met[m.POWER_USAGE][:8] = 600 + rng.normal(0, 8, (8, steps))
    resistance = np.full((16, steps), 0.064)
    resistance[serve] = 0.09  # the hotter slots of the node
    met["_r"] = resistance
    return ts, met, gpus


def temperatures(met: dict[str, FloatArray], step_s: float, seed: int = 7) -> FloatArray:
    rng = np.random.default_rng(seed + 1)
    r = met.pop("_r")
    equilibrium = 25 + r * met[m.POWER_USAGE]
    temp = np.empty_like(equilibrium)
    temp[:, 0] = equilibrium[:, 0]
    a = 1 - np.exp(-step_s / 90.0)
    for k in range(1, temp.shape[1]):
        temp[:, k] = temp[:, k - 1] + a * (equilibrium[:, k] - temp[:, k - 1])
    return np.round(temp + rng.normal(0, 0.3, temp.shape))


def test_a_diurnal_rise_of_load_is_not_forecast_to_throttle() -> None:
    ts, met, gpus = diurnal_inference()
    met[m.GPU_TEMP] = temperatures(met, 60.0)
    assert float(np.max(met[m.GPU_TEMP][8:, -1])) < 87 - 10  # well under the limit, at 65 % of its power
    found = run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
    assert [f for f in found if f.kind == "thermal"] == []


def test_a_thermal_resistance_that_climbs_under_diurnal_load_is_forecast_and_corroborated() -> None:
    ts, met, gpus = diurnal_inference()
    met["_r"][12, 240:] += np.linspace(0, 0.05, 240)  # a fan failing through the day on one server GPU
    met[m.GPU_TEMP] = temperatures(met, 60.0)
    found = [f for f in run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
             if f.kind == "thermal"]
    assert {(f.hostname, f.gpu) for f in found} == {("gpu-node-002", 4)}
    crossed = ts[int(np.argmax(met[m.GPU_TEMP][12] >= 87))]
    first = min(found, key=lambda f: f.ts)
    assert first.ts < crossed
    assert first.evidence["corroborated"] is True and first.evidence["signals"]


def test_a_thermal_forecast_needs_the_power_series() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)
    met[m.GPU_TEMP][9, 150:] += np.linspace(0, 40, 250)
    frame = det_synth.frame(ts, without(met, m.POWER_USAGE), gpus)
    assert [f for f in run([FailureForecast(default_targets())], frame) if f.kind == "thermal"] == []


# --- clocks under power capping -----------------------------------------------------------------------------


def capped_fleet() -> tuple[FloatArray, dict[str, FloatArray], GpuLabels]:
    """GPU 2 runs at its 600 W limit from the start; at sample 150 its work gets heavier and the clock gives
    way while the power holds at the limit. GPU 9's clock falls with its power (a slowdown): an anomaly."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=300)
    rng = np.random.default_rng(11)
    met[m.POWER_USAGE][2] = np.minimum(600 + rng.normal(0, 10, 300), 600.0)
    met[m.SM_CLOCK][2, 150:] = 1600 + rng.normal(0, 5, 150)
    met[m.SM_CLOCK][9, 150:] = 1050.0
    met[m.POWER_USAGE][9, 150:] = 380.0
    return ts, met, gpus


def clock_findings(found: list[Finding]) -> set[tuple[str, int | None]]:
    return {(f.hostname, f.gpu) for f in found if f.evidence.get("metric") == m.SM_CLOCK}


def test_a_clock_that_drops_under_power_capping_is_expected() -> None:
    ts, met, gpus = capped_fleet()
    found = run([LoadConditionedClock()], det_synth.frame(ts, met, gpus))
    assert clock_findings(found) == {("gpu-node-002", 1)}  # GPU 9; GPU 2 holds its power at the cap


def test_power_capping_is_read_from_the_limit_or_the_violation_counter_where_exported() -> None:
    ts, met, gpus = capped_fleet()
    met[m.POWER_USAGE][2] = 450 + np.random.default_rng(12).normal(0, 5, 300)
    met[m.POWER_USAGE][2, 150:] = 440.0  # an operator's limit of 450 W the GPU never reached before
    limit = np.full_like(met[m.POWER_USAGE], 700.0)
    limit[2, 150:] = 450.0
    with_limit = {**met, m.POWER_MGMT_LIMIT: limit}
    assert clock_findings(run([LoadConditionedClock()], det_synth.frame(ts, with_limit, gpus))) == {
        ("gpu-node-002", 1)}
    violation = np.zeros_like(limit)
    violation[2, 150:] = np.cumsum(np.full(150, 30e6))  # microseconds throttled for power
    with_counter = {**met, m.POWER_VIOLATION: violation}
    assert clock_findings(run([LoadConditionedClock()], det_synth.frame(ts, with_counter, gpus))) == {
        ("gpu-node-002", 1)}


def test_the_clock_baseline_is_off_without_power() -> None:
    ts, met, gpus = capped_fleet()
    assert run([LoadConditionedClock()], det_synth.frame(ts, without(met, m.POWER_USAGE), gpus)) == []


# --- memory leaks ---------------------------------------------------------------------------------------------


def with_framebuffer(met: dict[str, FloatArray], row: int, used: FloatArray) -> None:
    total = met[m.FB_USED][row] + met[m.FB_FREE][row]
    met[m.FB_USED][row] = used
    met[m.FB_FREE][row] = total - used


def test_memory_that_moves_up_and_down_is_not_a_leak() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)
    k = np.arange(400)
    # inference batches: the cache grows for 20 minutes, then is trimmed; the day's traffic lifts the floor
    with_framebuffer(met, 4, 30_000 + 12_000 * ((k % 40) / 40) + 40 * k)
    # training phases: evaluation holds 15 GiB more for 25 minutes every hour
    with_framebuffer(met, 9, met[m.FB_USED][9] - 20_000 + 15_000 * ((k % 120) >= 70))
    found = run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
    assert [f for f in found if f.kind == "memory_leak"] == []


def test_a_leak_is_a_climb_without_drops_for_half_an_hour_on_one_pod() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)
    with_framebuffer(met, 4, met[m.FB_USED][4] + np.concatenate([np.zeros(100), np.linspace(0, 21_000, 300)]))
    found = [f for f in run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
             if f.kind == "memory_leak"]
    assert [(f.hostname, f.gpu) for f in found] == [("gpu-node-001", 4)]
    assert found[0].ts >= ts[100] + 1200  # the half hour's first third must already climb
    assert found[0].evidence["monotone_climb_s"] >= 1800 and found[0].evidence["corroborated"] is True
    assert found[0].evidence["persistent"] is True  # watched for its span already: one report opens an incident


def test_a_leak_on_a_job_that_pauses_for_checkpoints_is_still_forecast() -> None:
    ts, met, gpus = training(steps=400)  # 30 s steps: a checkpoint of 3 min every 40 min on every rank
    for start in range(20, 400, 80):
        pause(met, slice(0, 16), slice(start, start + 6))
    with_framebuffer(met, 4, met[m.FB_USED][4] + np.concatenate([np.zeros(100), np.linspace(0, 21_000, 300)]))
    found = [f for f in run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
             if f.kind == "memory_leak"]
    assert [(f.hostname, f.gpu) for f in found] == [("gpu-node-001", 4)]


def test_a_leak_too_fast_to_forecast_is_found_when_the_climb_reaches_the_limit() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)  # 30 s steps
    total = met[m.FB_USED] + met[m.FB_FREE]
    climb = np.concatenate([np.zeros(200), np.linspace(0, 1, 14), np.ones(186)])  # 7 min to full, then stuck
    with_framebuffer(met, 4, np.minimum(met[m.FB_USED][4] + climb * 25_000, total[4] * 0.995))
    # another GPU's job starts at full memory (an allocator that takes it all): no climb, no leak
    with_framebuffer(met, 9, np.concatenate([np.full(300, 2_000.0), total[9, 300:] * 0.995]))
    found = [f for f in run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
             if f.kind == "memory_leak"]
    assert [(f.hostname, f.gpu, f.evidence["signals"][0]) for f in found] == [
        ("gpu-node-001", 4, "framebuffer_climbed_to_limit")]
    assert found[0].severity == "critical" and found[0].ts <= ts[214 + 2]


def test_a_new_job_filling_its_memory_at_the_old_jobs_level_is_no_leak() -> None:
    import dataclasses

    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)
    # gpu-node-001 GPU 4: one job hands over to the next at the same load, which allocates over 8 minutes
    ramp = np.concatenate([np.full(202, 20_000.0), np.linspace(20_000, 76_000, 16), np.full(182, 76_000.0)])
    with_framebuffer(met, 4, ramp)
    pods = list(gpus.pod)
    cycle = DetectionCycle(stages=[FailureForecast(default_targets())])
    found = cycle.update(det_synth.frame(ts[:201], {k: v[:, :201] for k, v in met.items()}, gpus))
    pods[4] = "train-9-worker-0"
    later = dataclasses.replace(gpus, pod=tuple(pods))
    found += cycle.update(det_synth.frame(ts[201:], {k: v[:, 201:] for k, v in met.items()}, later))
    assert [f for f in found if f.kind == "memory_leak"] == []


def test_a_pod_arriving_on_an_idle_gpu_and_warming_up_is_no_leak() -> None:
    """A pod scheduled on an idle GPU (a reschedule, a node back from repair) takes its memory at once and grows
    it a little more while its allocator warms up, then holds it. The jump from the idle GPU's level is the
    new pod's allocation, not a trend: the forecast follows the new pod from its first sample."""
    import dataclasses

    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=200, step_s=60.0)
    arrive, k = 40, np.arange(160)
    noise = np.random.default_rng(11).normal(0, 60, 200)
    warm = 58_000 + 7_000 * (1 - np.exp(-k / 9.0))  # most at once, the rest over a quarter of an hour
    with_framebuffer(met, 4, np.concatenate([np.full(arrive, 500.0), warm]) + noise)
    met[m.GPU_UTIL][4, :arrive] = 0.0
    met[m.GR_ENGINE_ACTIVE][4, :arrive] = 0.0
    met[m.POWER_USAGE][4, :arrive] = 70.0
    idle = dataclasses.replace(gpus, pod=tuple("" if r == 4 else p for r, p in enumerate(gpus.pod)))
    cycle = DetectionCycle(stages=[FailureForecast(default_targets())])
    found = cycle.update(det_synth.frame(ts[:arrive], {n: v[:, :arrive] for n, v in met.items()}, idle))
    for j in range(arrive, 200, 4):  # the rest a few minutes at a time, as the cycles read it
        found += cycle.update(det_synth.frame(ts[j:j + 4], {n: v[:, j:j + 4] for n, v in met.items()}, gpus))
    assert [f for f in found if f.kind == "memory_leak"] == []


def test_a_load_that_moves_to_a_new_level_still_settles_before_a_leak_is_forecast() -> None:
    from detectors.settling import note_load_steps

    ref, changed = np.full(1, np.nan), np.full(1, -np.inf)
    before, before_changed = np.full(1, np.nan), np.full(1, -np.inf)
    slots = np.array([0])
    for t, load in ((0, 90.0), (10, 90.0), (20, 5.0), (30, 90.0), (40, 30.0)):
        note_load_steps(ref, changed, slots, float(t), np.array([load]), relative=0.25, absolute=2.5,
                        pause=(before, before_changed))
        if t == 30:
            assert changed[0] == -np.inf  # the pause is over: back to the level it left, no step since
    assert changed[0] == 40.0  # a new level is a step


# --- corroboration --------------------------------------------------------------------------------------------


def test_a_warmer_room_is_not_corroborated_but_a_throttling_gpu_is() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=240)
    for name in (m.GPU_TEMP, m.MEMORY_TEMP):
        met[name][:8, 120:] += 8  # node 1's inlet air warms: every GPU of it, at unchanged power
    met[m.GPU_TEMP][12, 120:] += 12  # on node 2 one GPU runs hot and throttles for heat
    violation = np.zeros_like(met[m.GPU_TEMP])
    violation[12, 120:] = np.cumsum(np.full(120, 30e6))
    met[m.THERMAL_VIOLATION] = violation
    found = run(None, det_synth.frame(ts, met, gpus))
    room = [f for f in found if f.hostname == "gpu-node-001"]
    assert room and {f.kind for f in room} <= {"thermal", "anomaly"}
    assert all(f.evidence["corroborated"] is False and f.severity != "critical" for f in room)
    hot = [f for f in found if (f.hostname, f.gpu) == ("gpu-node-002", 4) and f.kind == "thermal"]
    assert hot and all("thermal_violation" in f.evidence["signals"] for f in hot)


def test_a_straggler_held_slow_is_corroborated_by_its_power_at_equal_load() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    met[m.SM_CLOCK][5, 100:] = 1980 * 0.7  # held slow, as busy as its peers, drawing less
    met[m.POWER_USAGE][5, 100:] = 450.0
    met[m.SM_CLOCK][20, 100:] = 1980 * 0.7  # held slow at its peers' power: the clock alone says so
    stragglers = [f for f in run(None, det_synth.frame(ts, met, gpus)) if f.kind == "straggler"]
    by_gpu = {(f.hostname, f.gpu): f.evidence for f in stragglers}
    assert by_gpu[("gpu-node-001", 5)]["signals"] == ["power_below_job_at_equal_load"]
    assert by_gpu[("gpu-node-003", 4)]["corroborated"] is False  # its clock is its basis, not its corroboration


def test_a_gpu_held_at_its_own_lower_power_limit_is_a_configuration_not_a_straggler() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    violation = np.zeros_like(met[m.GPU_TEMP])
    for row in range(8, 16):  # gpu-node-002 capped at 500 W by its operator: at the limit, clocks lower
        met[m.SM_CLOCK][row, 100:] = 1980 * 0.85
        met[m.POWER_USAGE][row, 100:] = 500.0
        violation[row, 100:] = np.cumsum(np.full(140, 30e6))
    met[m.SM_CLOCK][20, 100:] = 1980 * 0.7  # gpu-node-003 GPU 4 (the other job) held slow by a fault
    met[m.POWER_USAGE][20, 100:] = 450.0
    met[m.POWER_VIOLATION] = violation
    stragglers = [f for f in run(None, det_synth.frame(ts, met, gpus)) if f.kind == "straggler"]
    capped = [f for f in stragglers if f.hostname == "gpu-node-002"]
    assert all(f.evidence["corroborated"] is False and f.evidence["explained_by"] == "power_limit" for f in capped)
    fault = [f for f in stragglers if (f.hostname, f.gpu) == ("gpu-node-003", 4)]
    assert fault and fault[0].evidence["corroborated"] is True


def test_an_uncorroborated_soft_finding_is_never_critical_and_a_hard_one_is_left_alone() -> None:
    from detectors.corroboration import corroborate, is_soft

    forecast = Finding(ts=0.0, hostname="h", gpu=0, uuid="u", kind="thermal", severity="critical", score=0.9,
                       detector="forecast.DCGM_FI_DEV_GPU_TEMP.throttle", evidence={"signals": []})
    assert corroborate(forecast, []).severity == "warning"
    assert corroborate(forecast, ["thermal_violation"]).severity == "critical"
    xid = Finding(ts=0.0, hostname="h", gpu=0, uuid="u", kind="xid", severity="critical", score=1.0,
                  detector="rules.xid")
    assert not is_soft(xid)


def test_a_leak_that_fills_the_memory_fast_is_forecast_once_watched_as_long_as_it_reaches_ahead() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=300, step_s=15.0)
    room = 20_000.0
    with_framebuffer(met, 4, met[m.FB_USED][4] + room * np.clip((np.arange(300) - 100) / 80, 0, 1) ** 1.3)
    found = [f for f in run([FailureForecast(default_targets())], det_synth.frame(ts, met, gpus))
             if f.kind == "memory_leak"]
    assert [(f.hostname, f.gpu) for f in found] == [("gpu-node-001", 4)]
    full_at = ts[180]
    assert ts[100] + 300 <= found[0].ts < full_at
    # watched about as long as it looks ahead
    assert found[0].evidence["monotone_climb_s"] >= full_at - found[0].ts - 120


def test_a_cycle_saved_before_the_physics_checks_restores_and_runs_on() -> None:
    from detectors.anomaly import RobustBaseline

    ts, met, gpus, nodes, nm = det_synth.healthy(nodes=2, gpus_per_node=4, steps=120)
    first, second = det_synth.chunks(det_synth.frame(ts, met, gpus, nodes, nm), 60)
    cycle = DetectionCycle()
    cycle.update(first)
    del cycle.__dict__["corroboration"]
    for stage in cycle.stages:
        if isinstance(stage, FailureForecast):
            for state in stage._states.values():
                for name in ("thermal", "climb", "power_ceiling", "nodes", "hot", "hot_since"):
                    del state.__dict__[name]
        if isinstance(stage, RobustBaseline):
            del stage.__dict__["_calm"], stage.__dict__["_calm_at_start"]
    restored = DetectionCycle.from_state(cycle.state_bytes())
    assert restored.update(second) == []


def test_a_deployments_replicas_are_no_job_to_compare_work_against() -> None:
    from detectors.corroboration import Corroboration

    labels = GpuLabels(hostname=("gpu-node-001",) * 4, gpu=(0, 1, 2, 3), uuid=("a", "b", "c", "d"),
                       model_name=("NVIDIA H100 80GB HBM3",) * 4,
                       pod=("sd-serving-7d9f8c6b5-x2k4b", "sd-serving-7d9f8c6b5-x2k4c", "train-0-worker-0",
                            "train-0-worker-1"), namespace=("inference", "inference", "ml", "ml"))
    _, job, jobs, _, _ = Corroboration()._grouping(labels)
    assert list(job[:2]) == [-1, -1] and job[2] == job[3] >= 0 and jobs == 1
