"""Job saturation: a Deployment's load surging far above its usual level, or pinned at the ceiling, is an
overload; a training job going flat out, a slow daily rise and a momentary dip are not."""

from __future__ import annotations

import pickle

import numpy as np

from detectors import metrics as m
from detectors.frame import GpuLabels
from detectors.pipeline import DetectionCycle
from detectors.saturation import JobSaturation, _JobLevel, deployment_of
from tests.unit import det_synth

STEPS = 200


def _fleet(util: dict[str, np.ndarray]) -> tuple[GpuLabels, np.ndarray]:
    """Four GPUs per workload; `util` gives each workload's utilisation over time."""
    host, gpu, uuid, pod, ns, rows = [], [], [], [], [], []
    for w, (name, series) in enumerate(util.items()):
        for i in range(4):
            host.append(f"gpu-node-{w + 1:03d}")
            gpu.append(i)
            uuid.append(f"GPU-{w}-{i}")
            pod.append(name.format(i="bcdf"[i]))  # the safe alphabet, as Kubernetes names replicas
            ns.append("serve")
            rows.append(series + np.random.default_rng(w * 10 + i).normal(0, 1.0, len(series)))
    labels = GpuLabels(hostname=tuple(host), gpu=tuple(gpu), uuid=tuple(uuid),
                       model_name=("NVIDIA H100 80GB HBM3",) * len(host), pod=tuple(pod), namespace=tuple(ns))
    return labels, np.clip(np.array(rows), 0, 100)


def _run(util: dict[str, np.ndarray], step: float = 15.0,
         gap: tuple[float, float] = (np.inf, 0.0)) -> list:  # type: ignore[type-arg]
    """The findings; `gap` = (at, length): no sample for `length` seconds from `at` seconds in."""
    labels, series = _fleet(util)
    ts = det_synth.T0 + step * np.arange(series.shape[1])
    ts[ts >= det_synth.T0 + gap[0]] += gap[1]
    frame = det_synth.frame(ts, {m.GPU_UTIL: series}, labels)
    return DetectionCycle(stages=[JobSaturation()]).update(frame)


def test_replica_pods_name_their_deployment_and_other_pods_none() -> None:
    assert deployment_of("chat-api-7d9f8c6b5-x2k4z", "serve") == "serve/chat-api"
    assert deployment_of("train-0-worker-3", "ml") is None
    assert deployment_of("prep-x2k4z", "ml") is None  # a Job's pod: no template hash


def test_a_surge_on_a_deployment_is_an_overload_naming_it() -> None:
    surge = np.r_[np.full(100, 30.0), np.full(100, 80.0)]
    surge[150:153] = 30.0  # a momentary dip in the middle of the episode
    found = _run({"chat-api-7d9f8c6b5-x2k4{i}": surge})
    gaps = np.diff([x.ts for x in found])
    assert len(found) > 1 and gaps.min() >= JobSaturation().repeat_s  # reported again while it lasts
    assert {x.evidence["deployment"] for x in found} == {"serve/chat-api"}
    f = found[0]
    assert f.kind == "overload" and f.evidence["deployment"] == "serve/chat-api" and f.evidence["job_gpus"] == 4
    assert f.ts == det_synth.T0 + 15.0 * 100 + JobSaturation().persist_s
    assert f.evidence["usual_util"] < 35 and f.evidence["job_median_util"] > 75


def test_training_flat_out_a_daily_rise_and_a_steady_service_are_not_overloads() -> None:
    assert _run({
        "train-0-worker-{i}": np.r_[np.full(100, 10.0), np.full(100, 98.0)],       # not a Deployment
        "embed-5b7c9d4f6-q2w4{i}": np.linspace(30.0, 60.0, STEPS),                   # the request curve
        "chat-api-7d9f8c6b5-x2k4{i}": np.full(STEPS, 55.0),                          # steady
    }) == []


def test_a_burst_the_replicas_absorb_is_a_suspicion_until_it_outlasts_the_days_bursts() -> None:
    surge = np.r_[np.full(100, 30.0), np.full(100, 80.0)]   # twice the usual level, below the ceiling
    found = _run({"chat-api-7d9f8c6b5-x2k4{i}": surge})
    sustain = JobSaturation().sustain_s
    early = [f for f in found if f.evidence["saturated_s"] < sustain]
    late = [f for f in found if f.evidence["saturated_s"] >= sustain]
    assert early and all(f.evidence["corroborated"] is False for f in early)
    assert late and all(f.evidence["corroborated"] is True and f.evidence["signals"] == ["sustained"] for f in late)


def test_pinned_at_the_ceiling_is_named_but_stands_on_its_own_only_once_it_outlasts_a_burst() -> None:
    pinned = _run({"chat-api-7d9f8c6b5-x2k4{i}": np.r_[np.full(100, 40.0), np.full(100, 100.0)]})
    sustain = JobSaturation().sustain_s
    assert pinned and all("at_ceiling" in f.evidence["signals"] for f in pinned)
    assert all(f.evidence["corroborated"] is (f.evidence["saturated_s"] >= sustain) for f in pinned)
    assert pinned[0].evidence["corroborated"] is False and pinned[-1].evidence["corroborated"] is True
    burst = np.r_[np.full(100, 40.0), np.full(60, 100.0), np.full(40, 40.0)]  # 15 min at the ceiling
    assert [f.evidence["corroborated"] for f in _run({"chat-api-7d9f8c6b5-x2k4{i}": burst})] == \
        [False] * len(_run({"chat-api-7d9f8c6b5-x2k4{i}": burst}))


def test_durations_are_data_time_so_a_60s_scrape_reads_a_daily_rise_as_no_overload() -> None:
    # nine hours of a service's morning at one sample a minute: 20 % to 85 %, as requests grow through the day
    rise = np.linspace(20.0, 85.0, 540)
    assert _run({"embed-5b7c9d4f6-q2w4{i}": rise}, step=60.0) == []
    # the same surge is found after the same data time at 15 s and at 60 s
    at_15 = _run({"chat-api-7d9f8c6b5-x2k4{i}": np.r_[np.full(100, 30.0), np.full(100, 80.0)]})
    at_60 = _run({"chat-api-7d9f8c6b5-x2k4{i}": np.r_[np.full(25, 30.0), np.full(40, 80.0)]}, step=60.0)
    assert at_15 and at_60
    assert at_15[0].ts - (det_synth.T0 + 1500.0) == at_60[0].ts - (det_synth.T0 + 1500.0) == JobSaturation().persist_s


def test_a_gap_in_the_data_longer_than_the_persistence_breaks_a_run() -> None:
    surge = np.r_[np.full(100, 30.0), np.full(100, 80.0)]
    # ten samples into the surge the scrapes stop for ten minutes
    found = _run({"chat-api-7d9f8c6b5-x2k4{i}": surge}, gap=(15.0 * 110, 600.0))
    resumed = det_synth.T0 + 15.0 * 110 + 600.0
    assert found and found[0].ts == resumed + JobSaturation().persist_s  # counted again from the resumption


def test_a_state_saved_when_levels_counted_samples_still_loads() -> None:
    stage = JobSaturation()
    old = _JobLevel(usual=30.0)
    for name in ("last_ts", "learnt_s", "run_since", "quiet_since", "samples", "reported_at", "active"):
        del old.__dict__[name]  # the fields a level had then: usual, seen, run, quiet, active
    old.__dict__.update(seen=100, run=0, quiet=5, active=False)
    stage._jobs["serve/chat-api"] = old
    restored = pickle.loads(pickle.dumps(stage))
    labels, series = _fleet({"chat-api-7d9f8c6b5-x2k4{i}": np.r_[np.full(100, 30.0), np.full(100, 80.0)]})
    ts = det_synth.T0 + 15.0 * np.arange(series.shape[1])
    found = DetectionCycle(stages=[restored]).update(det_synth.frame(ts, {m.GPU_UTIL: series}, labels))
    assert found and found[0].evidence["deployment"] == "serve/chat-api"
