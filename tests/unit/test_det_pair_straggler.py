"""A job of two GPUs: each GPU is judged against the other by its clock while both work (two GPUs have no median
that stands for the job, and the less busy of two may be the one waiting or the slow one)."""

from __future__ import annotations

import pytest

from detectors import metrics as m
from detectors.findings import Finding
from detectors.frame import FloatArray, GpuLabels
from detectors.pipeline import DetectionCycle
from tests.unit import det_synth

SLOW, WAITING, AT = 1, 0, 120


def pair(seed: int = 5, steps: int = 360) -> tuple[FloatArray, dict[str, FloatArray], GpuLabels]:
    """One training job on the two GPUs of one node, busy and at the working clock."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=2, steps=steps, seed=seed)
    return ts, met, gpus


def hold_slow(met: dict[str, FloatArray], ratio: float = 0.75, work_counted: bool = False) -> None:
    """From step AT the SLOW GPU is held at `ratio` of its clock (its power falls with it); the other waits for
    it at every collective: less busy, drawing a little less, at its full clock. With `work_counted` the slow
    GPU's engine activity counts work done, so it reads less active than the one waiting (its utilisation, a
    time share, does not)."""
    met[m.SM_CLOCK][SLOW, AT:] = 1980 * ratio
    if work_counted:
        met[m.GR_ENGINE_ACTIVE][SLOW, AT:] *= ratio * 0.9
    met[m.POWER_USAGE][SLOW, AT:] = 70 + (met[m.POWER_USAGE][SLOW, AT:] - 70) * ratio**2
    wait = 0.35 + 0.65 * ratio
    for name in (m.GPU_UTIL, m.GR_ENGINE_ACTIVE):
        met[name][WAITING, AT:] *= wait
    met[m.POWER_USAGE][WAITING, AT:] *= 0.95


def stragglers(ts: FloatArray, met: dict[str, FloatArray], gpus: GpuLabels) -> list[Finding]:
    return [f for f in DetectionCycle().update(det_synth.frame(ts, met, gpus)) if f.kind == "straggler"]


@pytest.mark.parametrize("work_counted", [False, True])
def test_the_slow_gpu_of_a_pair_is_a_corroborated_straggler_and_the_one_waiting_for_it_is_not(
        work_counted: bool) -> None:
    ts, met, gpus = pair()
    hold_slow(met, work_counted=work_counted)
    found = stragglers(ts, met, gpus)
    assert found and {f.gpu for f in found} == {SLOW}
    first = found[0]
    assert ts[AT] < first.ts <= ts[AT + 4]
    assert first.evidence["job_gpus"] == 2 and first.evidence["sm_clock_mhz"] == 1485.0
    assert abs(first.evidence["peer_sm_clock_mhz"] - 1980) < 30
    assert all(f.evidence["corroborated"] and "power_below_job_at_equal_load" in f.evidence["signals"]
               for f in found)
    assert found[-1].ts > ts[300]  # for as long as it is held


def test_a_pair_at_its_working_clock_is_quiet_and_so_is_a_small_clock_gap() -> None:
    ts, met, gpus = pair()
    assert stragglers(ts, met, gpus) == []
    ts, met, gpus = pair()
    hold_slow(met, ratio=0.9)  # 10 % below the other: within what two GPUs of a model scatter under a cap
    assert stragglers(ts, met, gpus) == []


def test_a_pair_that_is_not_working_is_never_judged_by_its_clocks() -> None:
    """Between steps (a checkpoint, an evaluation) both GPUs idle and their clocks drop unevenly."""
    ts, met, gpus = pair()
    for name, scale in ((m.GPU_UTIL, 0.1), (m.GR_ENGINE_ACTIVE, 0.1)):
        met[name][:, AT:] *= scale
    met[m.SM_CLOCK][SLOW, AT:] = 900.0
    met[m.SM_CLOCK][WAITING, AT:] = 1400.0
    assert stragglers(ts, met, gpus) == []


def test_a_job_of_four_is_still_judged_against_its_median_not_gpu_against_gpu() -> None:
    """10 % below its job's median is within the median rule's gap; measured against one other GPU (the mean of
    a pair) it would not be."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=4, steps=360, seed=5)
    met[m.SM_CLOCK][SLOW, AT:] = 1980 * 0.9
    assert stragglers(ts, met, gpus) == []
    met[m.SM_CLOCK][SLOW, AT:] = 1980 * 0.75
    assert {f.gpu for f in stragglers(ts, met, gpus)} == {SLOW}
