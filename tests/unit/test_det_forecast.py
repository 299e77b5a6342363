"""Failure forecasts: time to a limit with a prediction interval, and the fleet-wide forecast stage."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import metrics as m
from detectors.forecast import FailureForecast, default_targets, time_to_limit
from detectors.pipeline import DetectionCycle
from tests.unit import det_synth


def test_time_to_limit_brackets_the_true_crossing() -> None:
    rng = np.random.default_rng(5)
    step = 30.0
    y = 60.0 + 0.1 * np.arange(120) + rng.normal(0, 0.3, 120)  # +0.1 per step
    result = time_to_limit(y, step, 87.0, 6 * 3600.0)
    truth = (87.0 - (60.0 + 0.1 * 119)) / 0.1 * step
    assert result.expected_s is not None and result.earliest_s is not None
    assert result.expected_s == pytest.approx(truth, rel=0.15)
    assert result.earliest_s <= result.expected_s
    assert result.latest_s is None or result.latest_s >= result.expected_s


def test_flat_series_never_crosses_and_bad_history_is_refused() -> None:
    y = 60.0 + np.random.default_rng(1).normal(0, 0.3, 120)
    assert time_to_limit(y, 30.0, 87.0, 6 * 3600.0).expected_s is None
    with pytest.raises(ValueError, match="10 finite"):
        time_to_limit(np.array([1.0, np.nan] * 10), 30.0, 5.0, 3600.0)


def test_memory_leak_and_thermal_runaway_are_forecast_before_the_limit() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)
    leak_total = met[m.FB_USED][4] + met[m.FB_FREE][4]
    met[m.FB_USED][4, 100:] += np.linspace(0, 21_000, 300)
    met[m.FB_FREE][4] = leak_total - met[m.FB_USED][4]
    met[m.GPU_TEMP][9, 150:] += np.linspace(0, 40, 250)
    stage = FailureForecast(default_targets())
    found = DetectionCycle(stages=[stage]).update(det_synth.frame(ts, met, gpus))
    leak = [f for f in found if f.kind == "memory_leak"]
    assert [(f.hostname, f.gpu) for f in leak] == [("gpu-node-001", 4)]
    full_at = ts[100 + int(np.argmax(met[m.FB_USED][4, 100:] >= 0.98 * leak_total[100:]))]
    assert leak[0].predicted_failure_at is not None
    assert leak[0].ts < full_at
    assert abs(leak[0].predicted_failure_at - full_at) < 0.3 * (full_at - leak[0].ts)
    thermal = {f.detector: f for f in found if f.kind == "thermal"}
    name = f"forecast.{m.GPU_TEMP}"
    assert set(thermal) == {f"{name}.throttle", f"{name}.shutdown"}
    throttle = thermal[f"{name}.throttle"]
    crossed = ts[int(np.argmax(met[m.GPU_TEMP][9] >= 87.0))]
    assert (throttle.hostname, throttle.gpu) == ("gpu-node-002", 1) and throttle.ts < crossed
    assert throttle.evidence["eta_earliest_s"] <= throttle.evidence["eta_s"]
    assert len(found) == 3


def test_only_a_runaway_watched_for_its_span_is_reported_as_persisted() -> None:
    """A thermal forecast opens an incident from its single report only when its finding says the climb has
    persisted: the thermal resistance seen rising at constant power over the settled history. A GPU minutes into
    running hot, or one whose temperature follows its load, needs the incident service's repeats."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=400)  # 30 s samples
    met[m.POWER_USAGE][9, 150:] += np.linspace(0, 250, 250)          # load-driven: power and heat rise together
    met[m.GPU_TEMP][9, 150:] += np.linspace(0, 250 * 0.12, 250)
    met[m.GPU_TEMP][3, 300:] += 8 + np.linspace(0, 30, 100)          # hotter at equal power, and climbing
    found = DetectionCycle(stages=[FailureForecast(default_targets())]).update(det_synth.frame(ts, met, gpus))
    seen = [(f.gpu, f.detector.rsplit(".", 1)[1], f.ts - ts[0], f.evidence.get("persistent") is True)
            for f in found if f.kind == "thermal"]
    assert sorted(seen) == [(1, "shutdown", 10890.0, False), (1, "throttle", 9510.0, False),
                            (3, "shutdown", 10380.0, True), (3, "throttle", 9180.0, False)]
    persisted = next(f for f in found if f.gpu == 3 and f.detector.endswith("shutdown"))
    assert "temp_rising_at_constant_power" in persisted.evidence["signals"]
    assert persisted.evidence["corroborated"] is True


def test_a_gpu_warming_up_after_its_job_starts_is_not_forecast() -> None:
    """A job starting on idle GPUs: power steps up, temperature rises along a saturating curve. That is load
    settling, not a failing cooler; the same rise under a steady load is forecast."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=8, steps=400)
    start = 120
    for row in (0, 1):
        met[m.POWER_USAGE][row, :start] = 90 + np.random.default_rng(row).normal(0, 3, start)
        met[m.GPU_UTIL][row, :start] = 0.0
        rise = 1 - np.exp(-np.arange(400 - start) / 6.0)  # a GPU's thermal time constant: minutes
        met[m.GPU_TEMP][row, :start] = 30.0
        met[m.GPU_TEMP][row, start:] = 30.0 + 55.0 * rise
    met[m.GPU_TEMP][5, 150:] += np.linspace(0, 40, 250)  # steady load, failing cooling
    found = DetectionCycle(stages=[FailureForecast(default_targets())]).update(det_synth.frame(ts, met, gpus))
    assert {(f.gpu, f.kind) for f in found} == {(5, "thermal")}


def test_a_forecast_first_reported_as_a_suspicion_is_reported_again_once_it_stands_alone() -> None:
    """A cooler failing slowly (6 °C/h at constant power): the first throttle forecast is a warning hours ahead
    that the incident service would open only on repeats, and one report per episode never repeats. When a later
    fit of the same episode puts the crossing within the hour, the forecast is reported again, as critical, once,
    before the GPU reaches its throttle temperature."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=1000)  # 30 s samples
    met[m.GPU_TEMP][3, 300:] += 0.05 * np.arange(700)
    found = DetectionCycle(stages=[FailureForecast(default_targets())]).update(det_synth.frame(ts, met, gpus))
    throttle = [f for f in found if f.detector.endswith(".throttle")]
    assert [(f.gpu, f.severity.value) for f in throttle] == [(3, "warning"), (3, "critical")]
    first, again = throttle
    assert first.evidence["corroborated"] is True and first.evidence.get("persistent") is not True
    crossed = ts[int(np.argmax(met[m.GPU_TEMP][3] >= 87.0))]
    assert first.ts < again.ts < crossed
    assert again.evidence["eta_s"] <= 3600 and first.evidence["eta_s"] > 3600
    assert again.predicted_failure_at is not None
    assert abs(again.predicted_failure_at - crossed) < 0.5 * (crossed - again.ts)
