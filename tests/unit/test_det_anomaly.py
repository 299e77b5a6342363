"""Streaming anomaly models: baselines, CUSUM on counters, peers, the multivariate model."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from detectors import metrics as m
from detectors.anomaly import CounterBurst, CounterCusum, RobustBaseline
from detectors.findings import Finding
from detectors.frame import FleetFrame
from detectors.multivariate import MultivariateModel
from detectors.peers import PeerComparison, group_median, job_of
from detectors.pipeline import JOB_MEMORY_S, DetectionCycle, JobMemory, with_jobs
from detectors.rules import Stage
from detectors.stream import samples_in
from tests.unit import det_synth

SPIN = samples_in(PeerComparison().spin_persist_s, 30.0)  # a hang's samples at the tests' 30 s scrape
STEP = 30.0  # det_synth.healthy's scrape interval
PERSIST = samples_in(PeerComparison().persist_s, STEP)  # a straggler's or a hot GPU's samples at that interval


def run(stage: Stage, f: FleetFrame) -> list[Finding]:
    return DetectionCycle(stages=[stage]).update(f)


@pytest.mark.parametrize(("pod", "job"), [
    ("train-0-worker-3", "ml/train-0"),
    ("train-0-master-0", "ml/train-0"),
    ("llama-ft-7", "ml/llama-ft"),
    ("infer-7d9f8c6b5-x2k4z", "ml/infer"),
    ("serve-04-7d9f8c6b5-x2k4z", "ml/serve-04"),  # a Deployment's digits are its name, not an ordinal
    ("serve-05-7d9f8c6b5-bcdfg", "ml/serve-05"),
    ("prep-x2k4z", "ml/prep"),
    ("solo", "ml/solo"),
])
def test_job_grouping(pod: str, job: str) -> None:
    assert job_of(pod, "ml") == job
    assert job_of("", "ml") is None


def test_group_median_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=200)
    values[::17] = np.nan
    groups = rng.integers(-1, 6, size=200)
    med, count = group_median(values, groups, 6)
    for g in range(6):
        sel = values[(groups == g) & np.isfinite(values)]
        assert count[g] == sel.size
        assert med[g] == pytest.approx(np.median(sel))


def test_a_fleet_where_no_gpu_runs_a_job_is_compared_by_node_only() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=4)
    idle = replace(gpus, pod=("",) * len(gpus.pod), namespace=("",) * len(gpus.namespace))
    assert group_median(np.ones(3), np.full(3, -1), 0)[0].shape == (1,)
    assert run(PeerComparison(), det_synth.frame(ts, met, idle)) == []


def test_baseline_flags_a_level_shift_once_and_ignores_noise_and_gaps() -> None:
    ts, met, gpus, _, _ = det_synth.healthy()
    met[m.POWER_USAGE][9, 150:] = 300.0
    met[m.POWER_USAGE][3, ::7] = np.nan
    found = run(RobustBaseline(m.POWER_USAGE, "power", 25.0), det_synth.frame(ts, met, gpus))
    persist = samples_in(RobustBaseline(m.POWER_USAGE, "power", 25.0).persist_s, STEP)
    assert [(f.gpu, f.hostname, f.ts, f.kind) for f in found] == [(1, "gpu-node-002", ts[150 + persist - 1], "power")]
    assert found[0].evidence["baseline"] == pytest.approx(600, abs=5)


def test_seasonal_baseline_learns_the_daily_shape() -> None:
    step = 900.0
    steps = 96 * 6  # six days of 15-minute samples
    ts, _, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=4, steps=steps, step_s=step)
    daily = 40 * np.sin(2 * np.pi * (ts % 86400) / 86400)
    temp = 60 + daily + np.random.default_rng(2).normal(0, 0.5, (4, steps))
    temp[2, 96 * 5 + 30:96 * 5 + 40] -= 30  # one afternoon far below its usual level
    memory = 50 * step  # both baselines remember about half a day
    plain = RobustBaseline(m.GPU_TEMP, "thermal", 3.0, half_life_s=memory, warmup_s=86400.0)
    seasonal = RobustBaseline(m.GPU_TEMP, "thermal", 3.0, half_life_s=memory, warmup_s=30 * step,
                              season_s=86400.0, season_bins=96)
    f = det_synth.frame(ts, {m.GPU_TEMP: temp}, gpus)
    assert run(plain, f) == []  # the daily swing widens a plain baseline until the dip hides in it
    found = run(seasonal, f)
    assert [(x.gpu, x.ts) for x in found] == [(2, ts[96 * 5 + 30 + samples_in(seasonal.persist_s, step) - 1])]


def test_cusum_catches_a_counter_storm_not_noise_or_resets() -> None:
    ts, met, gpus, _, _ = det_synth.healthy()
    sbe = met[m.ECC_SBE_VOL_TOTAL]
    sbe[5, 150:] += np.cumsum(np.full(90, 4.0))
    sbe[7, 100:] -= sbe[7, 100]  # driver reload resets the counter
    found = run(CounterCusum(m.ECC_SBE_VOL_TOTAL, "ecc"), det_synth.frame(ts, met, gpus))
    assert [(f.gpu, f.hostname, f.kind) for f in found] == [(5, "gpu-node-001", "ecc")]
    assert ts[150] <= found[0].ts <= ts[156]


def test_a_burst_of_single_bit_errors_is_found_but_not_a_steady_rate_a_reset_or_a_gap() -> None:
    """Three hours at a 30 s scrape. GPU 1 logs 12 errors in 20 minutes after two clean hours; GPU 2 logs 60 in
    its first 70 minutes, before it has an hour of history to judge them by; GPU 3 logs fifteen an hour all along
    (a weak cell the ECC corrects, as steady as ever); GPU 4's counter resets from 500 to 0; GPU 5's rises by 40
    across a two-hour gap."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=8, steps=360)
    rng = np.random.default_rng(3)
    sbe = np.zeros((8, 360))
    sbe[1, 240:] = np.minimum(np.arange(120) // 3.0, 12.0)  # 12 in the 20 min from 2 h on
    sbe[2, 100:] = np.minimum(np.arange(260) // (2 / 3), 60.0)  # 60 from 50 to 70 min
    sbe[3] = np.cumsum(rng.poisson(15 / 120, 360))          # 15 an hour
    sbe[4, :180], sbe[4, 180:] = 500.0, np.arange(180) // 60.0
    sbe[5, 100:340], sbe[5, 340:] = np.nan, 40.0
    met[m.ECC_SBE_VOL_TOTAL] = sbe
    found = run(CounterBurst(m.ECC_SBE_VOL_TOTAL, "ecc"), det_synth.frame(ts, met, gpus))
    assert [(f.gpu, f.kind) for f in found] == [(1, "ecc")]  # once
    count = int(found[0].evidence["count_in_window"])  # ten at least; as many as a clean hour makes implausible
    assert 10 <= count <= 12 and found[0].ts == ts[240 + 3 * count]  # the error that made it so
    assert found[0].evidence["count_per_window_before"] == 0
    assert sbe[3, -1] > 30  # the steady GPU logged more than a burst's count each hour: its rate, not a climb
    # the same steady GPU, watched for two hours before it climbs by 120 an hour, is found
    sbe[3, 240:] += np.arange(120) // 1.0
    found = run(CounterBurst(m.ECC_SBE_VOL_TOTAL, "ecc"), det_synth.frame(ts, met, gpus))
    assert {f.gpu for f in found} == {1, 3}


def first_reports(found: list[Finding], kind: str) -> list[tuple[str, int | None, float]]:
    """Each GPU's first report of `kind` (an episode that lasts is reported again every few samples)."""
    firsts: dict[tuple[str, int | None], float] = {}
    for f in found:
        if f.kind == kind:
            firsts.setdefault((f.hostname, f.gpu), f.ts)
    return [(host, gpu, ts) for (host, gpu), ts in firsts.items()]


def test_straggler_and_hot_gpu_and_a_paused_job_is_not_hung() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    met[m.GR_ENGINE_ACTIVE][3, 100:] = 0.4  # a straggler in job train-0
    met[m.GR_ENGINE_ACTIVE][16:, 150:] = 0.0  # job train-1 stops computing, memory still held: a pause, not a hang
    met[m.GPU_UTIL][16:, 150:] = 0.0
    met[m.GPU_TEMP][8, 60:] += 15  # one GPU of node 2 much hotter than its neighbours
    found = run(PeerComparison(), det_synth.frame(ts, met, gpus))
    assert first_reports(found, "straggler") == [("gpu-node-001", 3, ts[100 + PERSIST - 1])]
    repeats = [f.ts for f in found if f.kind == "straggler"]
    first, every = 100 + PERSIST - 1, samples_in(PeerComparison().repeat_s, STEP, at_least=1)
    assert repeats[:3] == [ts[first], ts[first + every], ts[first + 2 * every]]  # still straggling: reported again
    assert first_reports(found, "hung_job") == []
    hot = [(f.hostname, f.gpu, f.ts) for f in found if f.kind == "thermal"]
    assert hot == [("gpu-node-002", 0, ts[60 + PERSIST - 1])]


def test_a_throttled_gpu_is_a_straggler_and_a_spinning_job_is_hung() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    met[m.PIPE_TENSOR_ACTIVE] = met[m.GR_ENGINE_ACTIVE] * 0.55
    met[m.SM_CLOCK][5, 100:] = 1980 * 0.7  # clocks held low, still fully busy: the job waits for it
    met[m.PIPE_TENSOR_ACTIVE][16:, 150:] = 0.0  # job train-1 spins in a collective: busy engines, no tensor work
    met[m.POWER_USAGE][16:, 150:] = 110.0  # ... and near-idle power
    found = run(PeerComparison(), det_synth.frame(ts, met, gpus))
    stragglers = [f for f in found if f.kind == "straggler"]
    assert first_reports(found, "straggler") == [("gpu-node-001", 5, ts[100 + PERSIST - 1])]
    assert stragglers[0].evidence["sm_clock_mhz"] < 0.8 * stragglers[0].evidence["job_median_sm_clock_mhz"]
    hung = first_reports(found, "hung_job")
    assert len(hung) == 16 and {t for _, _, t in hung} == {ts[150 + SPIN - 1]}
    assert {f.evidence["job"] for f in found if f.kind == "hung_job"} == {"ml/train-1"}
    assert all(f.evidence["basis"] == "profiling" and f.evidence["corroborated"] for f in found
               if f.kind == "hung_job")


def test_a_job_without_tensor_work_is_not_hung_nor_a_gpu_clocked_like_its_peers_a_straggler() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    met[m.PIPE_TENSOR_ACTIVE] = met[m.GR_ENGINE_ACTIVE] * 0.55
    met[m.PIPE_TENSOR_ACTIVE][:16] = 0.0  # job train-0 never uses the tensor pipes (FP32, memory-bound work)
    met[m.SM_CLOCK][:, 100:] *= 0.9  # the whole fleet's clocks step down together (a power-cap change)
    assert run(PeerComparison(), det_synth.frame(ts, met, gpus)) == []


@pytest.mark.parametrize(("power_w", "limit_w", "hung"), [
    (110.0, 700.0, True),    # pinned engines at near-idle power: a spin, though the job never computed
    (450.0, 700.0, False),   # pinned engines at high power without tensor work: CUDA-core work, not a spin
    (110.0, None, False),    # no power limit exported: a GPU that never worked is not judged
])
def test_a_job_that_hangs_before_it_ever_computed(power_w: float, limit_w: float | None, hung: bool) -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, jobs=2)
    met[m.PIPE_TENSOR_ACTIVE] = met[m.GR_ENGINE_ACTIVE] * 0.55
    met[m.PIPE_TENSOR_ACTIVE][16:] = 0.0  # job train-1 met at its rendezvous, then its first collective hung
    met[m.GR_ENGINE_ACTIVE][16:] = 1.0
    met[m.GPU_UTIL][16:] = 100.0
    met[m.POWER_USAGE][16:] = power_w
    if limit_w is not None:
        met[m.POWER_MGMT_LIMIT] = np.full_like(met[m.POWER_USAGE], limit_w)
    found = run(PeerComparison(), det_synth.frame(ts, met, gpus))
    reports = first_reports(found, "hung_job")
    assert len(reports) == (16 if hung else 0)
    assert {f.evidence["job"] for f in found if f.kind == "hung_job"} == ({"ml/train-1"} if hung else set())


def test_one_hung_replica_of_a_deployment_is_found_among_its_quiet_peers() -> None:
    # eight serving Deployments of four one-GPU replicas each, lightly loaded; one replica's engine spins
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8)
    pods = tuple(f"serve-{i // 4:02d}-7d9f8c6b5-{'bcdfghjk'[i % 4]}x2k4" for i in range(32))
    gpus = replace(gpus, pod=pods, namespace=("inference",) * 32)
    met[m.GR_ENGINE_ACTIVE][:] = 0.1
    met[m.GPU_UTIL][:] = 10.0
    met[m.PIPE_TENSOR_ACTIVE] = np.full_like(met[m.GPU_UTIL], 0.05)
    met[m.PIPE_TENSOR_ACTIVE][:, :100] = 0.3  # every replica served a burst first
    met[m.POWER_USAGE][:, :100] = 550.0
    met[m.POWER_USAGE][:, 100:] = 150.0
    met[m.GR_ENGINE_ACTIVE][9, 150:] = 1.0  # serve-02's second replica: pinned, no tensor work, near idle power
    met[m.GPU_UTIL][9, 150:] = 100.0
    met[m.PIPE_TENSOR_ACTIVE][9, 150:] = 0.0
    found = run(PeerComparison(), det_synth.frame(ts, met, gpus))
    assert first_reports(found, "hung_job") == [("gpu-node-002", 1, ts[150 + SPIN - 1])]
    (first, *_) = [f for f in found if f.kind == "hung_job"]
    assert first.evidence["job"] == "inference/serve-02" and first.evidence["replica"] is True
    assert first.evidence["pod"] == pods[9]


def test_a_job_that_finishes_and_frees_memory_is_not_hung() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=4)
    met[m.GR_ENGINE_ACTIVE][:, 150:] = 0.0
    met[m.GPU_UTIL][:, 150:] = 0.0
    met[m.FB_USED][:, 150:] = 0.0
    assert run(PeerComparison(), det_synth.frame(ts, met, gpus)) == []


@pytest.mark.parametrize("method", ["robust_covariance", "isolation_forest"])
def test_multivariate_model_flags_an_unusual_combination(method: str) -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, steps=300)
    met[m.POWER_USAGE][11, 200:] = 350.0  # power of an idle GPU ...
    met[m.SM_CLOCK][11, 200:] = 1400.0  # ... and a throttled clock, while utilisation stays high
    model = MultivariateModel(method=method, refit_s=1800.0)  # type: ignore[arg-type]
    found = run(model, det_synth.frame(ts, met, gpus))
    assert [(f.hostname, f.gpu) for f in found] == [("gpu-node-002", 3)]
    assert ts[200] <= found[0].ts <= ts[210]
    assert m.POWER_USAGE in found[0].evidence["top_metrics"]


def test_healthy_fleet_raises_no_findings_at_all() -> None:
    for seed in (0, 1):
        ts, met, gpus, nodes, nm = det_synth.healthy(nodes=4, gpus_per_node=8, steps=300, seed=seed, jobs=3)
        assert DetectionCycle().update(det_synth.frame(ts, met, gpus, nodes, nm)) == []


def test_a_busy_gpu_beside_idle_ones_is_not_hot_but_a_hot_one_at_like_load_is() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8)
    idle = slice(2, 8)  # node 1: two GPUs serve, six idle and cool
    met[m.GR_ENGINE_ACTIVE][idle] = 0.0
    met[m.GPU_UTIL][idle] = 0.0
    met[m.GPU_TEMP][idle] -= 30
    met[m.GPU_TEMP][12, 60:] += 15  # node 2, all busy: one GPU much hotter at the same load
    found = run(PeerComparison(), det_synth.frame(ts, met, gpus))
    hot = {(f.hostname, f.gpu) for f in found if f.kind == "thermal"}
    assert hot == {("gpu-node-002", 4)}


def test_level_findings_while_a_gpus_load_settles_are_dropped() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=240)
    for name, drop in ((m.GPU_UTIL, 90.0), (m.GR_ENGINE_ACTIVE, 0.9), (m.POWER_USAGE, 450.0),
                       (m.GPU_TEMP, 30.0), (m.MEMORY_TEMP, 30.0), (m.SM_CLOCK, 600.0)):
        met[name][3, 150:] -= drop  # GPU 3's pod finished: every load-driven level moves at once
    met[m.POWER_USAGE][9, 150:] -= 300.0  # GPU 9's power collapses while it stays busy: a real finding
    stages: list[Stage] = [RobustBaseline(m.POWER_USAGE, "power", 25.0), RobustBaseline(m.GPU_TEMP, "thermal", 3.0),
                            RobustBaseline(m.SM_CLOCK, "anomaly", 100.0)]
    found = DetectionCycle(stages=stages).update(det_synth.frame(ts, met, gpus))
    assert {f.gpu for f in found if f.hostname == "gpu-node-001"} == set()
    assert ("gpu-node-002", 1) in {(f.hostname, f.gpu) for f in found if f.kind == "power"}


def test_peer_state_pickled_before_the_newer_fields_restores_with_their_defaults() -> None:
    old = PeerComparison()
    for name in ("clock_gap", "_spin_run", "_was_working"):
        del old.__dict__[name]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.clock_gap == PeerComparison().clock_gap and restored._spin_run.size == 0


def test_a_finding_after_its_pod_died_keeps_the_job_the_gpu_just_had() -> None:
    running = det_synth.labels(1, 2)
    gone = replace(running, pod=("", running.pod[1]))  # GPU 0's pod was killed by the fault
    memory = JobMemory()
    assert with_jobs([], running, memory, now=100.0) == []
    ecc = Finding(ts=110.0, hostname="gpu-node-001", gpu=0, uuid="GPU-0", kind="ecc", severity="critical",
                  score=1.0, detector="test", evidence={})
    assert with_jobs([ecc], gone, memory, now=115.0)[0].evidence["job"] == "ml/train-0"
    assert "pod_now" not in with_jobs([ecc], gone, memory, now=115.0)[0].evidence  # no pod holds it now
    held = with_jobs([replace(ecc, gpu=1, uuid="GPU-1")], gone, memory, now=115.0)[0].evidence
    assert held["pod_now"] == f"{running.namespace[1]}/{running.pod[1]}"
    later = replace(ecc, ts=100.0 + JOB_MEMORY_S + 60)
    assert "job" not in with_jobs([later], gone, memory, now=later.ts)[0].evidence  # long idle: no job
