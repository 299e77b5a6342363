"""A link heading for failure logs its errors faster and faster: the climb test finds a rate growing steadily
towards DCGM's limit, and leaves alone a steady rate however high, a burst, a step to a new level, a reset, a
gap and a climb too slow to reach the limit within its horizon. On the twin it finds a degrading NVLink hours
before the link fails."""

from __future__ import annotations

import numpy as np

from detectors import metrics as m
from detectors.anomaly import NVLINK_CRC_LIMIT_PER_S, CounterRateClimb, _poisson_trends
from detectors.evaluation import _ts, matches
from detectors.findings import FindingKind
from detectors.pipeline import DetectionCycle
from simulator.recording import cycle_frames
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin
from tests.unit import det_synth

STEP = 30.0  # det_synth.healthy's scrape interval


def climb() -> CounterRateClimb:
    return CounterRateClimb(m.NVLINK_CRC_FLIT_ERRORS, FindingKind.NVLINK, NVLINK_CRC_LIMIT_PER_S, "dcgm_crc_rate")


def counter(rate_per_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A counter's samples every STEP seconds for a rate per second at each sample (Poisson increments)."""
    return np.cumsum(rng.poisson(rate_per_s * STEP)).astype(np.float64)


def test_a_rate_climbing_steadily_is_found_and_nothing_else() -> None:
    """Four hours at a 30 s scrape, one GPU each:
    1 climbs from 0.02/s ten-fold an hour from 1 h on (reaches 100/s in under 4 h);
    2 logs 50 a second all along (a steady rate far above the others');
    3 logs 0.05/s, then one burst of 20,000 at 2 h;
    4 logs 0.05/s, then 5/s from 2 h on (a step to a new level that stays);
    5 logs 3 a second, and its counter resets every 20 minutes (a driver reload each time);
    6 climbs like 1 with a 30-minute gap in its series once it was found;
    7 climbs 1.2-fold an hour from 10/s (clearly, but 100/s would take 12 h)."""
    steps = 600
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=8, steps=steps)
    rng = np.random.default_rng(5)
    hours = np.arange(steps) * STEP / 3600.0
    rising = np.where(hours < 1.0, 0.02, 0.02 * 10.0 ** (hours - 1.0))
    crc = np.zeros((8, steps))
    crc[1] = counter(rising, rng)
    crc[2] = counter(np.full(steps, 50.0), rng)
    crc[3] = counter(np.full(steps, 0.05), rng)
    crc[3, 240:] += 20_000
    crc[4] = counter(np.where(hours < 2.0, 0.05, 5.0), rng)
    crc[5] = counter(np.full(steps, 3.0), rng)
    crc[5] -= crc[5, (np.arange(steps) // 40) * 40]  # back to 0 every 20 min
    crc[6] = counter(rising, rng)
    crc[6, 350:410] = np.nan  # the window before it is under half covered: a climb unjudged, not ended
    crc[7] = counter(10.0 * 1.2 ** hours, rng)
    met[m.NVLINK_CRC_FLIT_ERRORS] = crc
    found = DetectionCycle(stages=[climb()]).update(det_synth.frame(ts, met, gpus))
    assert sorted(f.gpu for f in found) == [1, 6]  # each once: the gap neither ends 6's climb nor starts another
    one = next(f for f in found if f.gpu == 1)
    assert one.kind == FindingKind.NVLINK and one.evidence["persistent"] is True
    # found once it has climbed for most of the hour judged, long before it reaches the limit (at 1 h +
    # log10(5000) = 4.7 h)
    assert ts[0] + 1.5 * 3600 <= one.ts <= ts[0] + 3 * 3600
    assert 5 <= one.evidence["growth_per_h"] <= 20  # ten-fold an hour, estimated
    limit_at = ts[0] + (1.0 + np.log10(NVLINK_CRC_LIMIT_PER_S / 0.02)) * 3600
    assert abs(one.predicted_failure_at - limit_at) < 1800


def test_a_reset_counter_climbing_is_judged_on_what_it_counted() -> None:
    """A counter reset (a driver reload) in the middle of a climb costs the window it falls in nothing but the
    one decrease: the climb is found all the same, and a steady rate across resets is not."""
    steps = 480
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=2, steps=steps)
    rng = np.random.default_rng(8)
    hours = np.arange(steps) * STEP / 3600.0
    crc = np.zeros((2, steps))
    crc[0] = counter(np.where(hours < 1.0, 0.02, 0.02 * 10.0 ** (hours - 1.0)), rng)
    crc[1] = counter(np.full(steps, 3.0), rng)
    crc[:, 300:] -= crc[:, 300:301]
    met[m.NVLINK_CRC_FLIT_ERRORS] = crc
    found = DetectionCycle(stages=[climb()]).update(det_synth.frame(ts, met, gpus))
    assert [f.gpu for f in found] == [0]


def test_increases_across_gaps_are_not_placed_in_time() -> None:
    """A counter read only every 15 minutes (an exporter that mostly fails) climbs ten-fold an hour: no increase
    across a gap that long is placed in time, so no window is covered and nothing is judged."""
    steps = 480
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=2, steps=steps)
    hours = np.arange(steps) * STEP / 3600.0
    crc = np.zeros((2, steps))
    crc[0] = counter(0.5 * 10.0 ** hours, np.random.default_rng(2))
    crc[0, np.arange(steps) % 30 != 0] = np.nan
    met[m.NVLINK_CRC_FLIT_ERRORS] = crc
    assert DetectionCycle(stages=[climb()]).update(det_synth.frame(ts, met, gpus)) == []


def test_the_poisson_trend_recovers_a_known_growth_and_flags_a_step_by_its_fit() -> None:
    x = np.tile((np.arange(6) - 2.5) / 6.0, (3, 1))  # hours
    exposure = np.full((3, 6), 600.0)
    counts = np.vstack([
        exposure[0] * 0.1 * 2.0 ** (6.0 * x[0]),  # doubling each window: the exact means fit exactly
        [30.0, 30.0, 30.0, 3000.0, 3000.0, 3000.0],  # a step
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # nothing counted
    ])
    a, b, se, deviance = _poisson_trends(x, counts, exposure)
    assert abs(np.exp(b[0] / 6.0) - 2.0) < 1e-6 and abs(np.exp(a[0]) - 0.1) < 1e-6 and deviance[0] < 1e-6
    assert 0 < se[0] < b[0]
    assert deviance[1] > 100  # a step is no log-linear climb
    assert not b[2] > 1e-6  # and no growth


def test_a_degrading_nvlink_on_the_twin_is_found_hours_before_it_fails() -> None:
    twin = Twin(scenario_from_dict({
        "name": "climb", "seed": 17, "fleet": {"nodes": 2, "gpus_per_node": 8}, "duration": "5h", "step": "30s",
        "workloads": [{"type": "training", "name": "train", "nodes": 2}],
        "faults": [{"kind": "nvlink_degradation", "node": "gpu-node-002", "gpu": 5, "at": "30m", "lead": "4h"}],
    }))
    cycle = DetectionCycle(stages=[climb()])
    found = [f for frame in cycle_frames(twin, 8) for f in cycle.update(frame)]
    (truth,) = twin.truth()["faults"]
    assert found and {(f.hostname, f.gpu) for f in found} == {("gpu-node-002", 5)}
    assert matches(truth, found[0])
    assert _ts(truth["failure_at"]) - found[0].ts > 3600  # an hour and more before it fails
