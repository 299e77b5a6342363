"""Each GPU's idle run from one cycle to the next: an hour under the threshold is idle, a checkpoint's pause is
not, a missing sample is unknown; pods named by Kubernetes map to their Deployment."""

from __future__ import annotations

import numpy as np
import pytest

from gpuops.cost.tracking import BUSY, FREE, LOW, UNKNOWN, GpuTrack, advance, busy_seconds, is_idle, workload_of

STEP = 30.0


def _feed(util: list[float], *, pod: str = "nb-0", cycle: int = 10, overlap: int = 1) -> GpuTrack:
    """Run the tracker over `util` (one sample per STEP) in cycles of `cycle` samples whose windows overlap the
    previous one by `overlap` samples, as detection cycles do."""
    ts = np.arange(len(util), dtype=float) * STEP + 1_700_000_000.0
    values = np.array(util, dtype=float)
    track: GpuTrack | None = None
    for end in range(cycle, len(util) + cycle, cycle):
        lo = max(0, end - cycle - overlap)
        track = advance(track, pod=pod, namespace="ml", timestamps=ts[lo:end], util=values[lo:end],
                        threshold=5.0, max_gap_s=3 * STEP)
    assert track is not None
    return track


def test_an_hour_under_the_threshold_with_a_pod_bound_is_idle_from_its_first_low_sample() -> None:
    util = [80.0] * 10 + [1.0] * 125  # busy for 5 min, then 62.5 min at 1 %
    track = _feed(util)
    assert track.state == LOW and is_idle(track, 3600)
    assert track.low_since == 1_700_000_000.0 + 10 * STEP
    assert not is_idle(track, 4 * 3600)


def test_a_ten_minute_checkpoint_pause_is_never_idle() -> None:
    util = [90.0] * 60 + [0.0] * 20 + [90.0] * 60  # 10 minutes at 0 % in the middle of work
    assert _feed(util).state == BUSY
    during = _feed([90.0] * 60 + [0.0] * 20)  # the cycle that ends inside the pause
    assert during.state == LOW and not is_idle(during, 3600)


def test_a_missing_sample_makes_the_gpu_unknown_and_breaks_its_run() -> None:
    last_missing = _feed([1.0] * 130 + [float("nan")])
    assert last_missing.state == UNKNOWN and last_missing.low_since is None and not is_idle(last_missing, 3600)
    gap_inside = _feed([1.0] * 100 + [float("nan")] + [1.0] * 60)  # 50 min, a hole, 30 min: no hour without a break
    assert gap_inside.state == LOW and not is_idle(gap_inside, 3600)


def test_without_a_pod_a_quiet_gpu_is_free_not_idle() -> None:
    track = _feed([0.0] * 150, pod="")
    assert track.state == FREE and not is_idle(track, 3600)


def test_a_new_pod_starts_a_new_run() -> None:
    ts = np.arange(130, dtype=float) * STEP
    first = advance(None, pod="a-0", namespace="ml", timestamps=ts[:125], util=np.zeros(125), threshold=5.0,
                    max_gap_s=90)
    assert is_idle(first, 3600)
    second = advance(first, pod="b-0", namespace="ml", timestamps=ts[124:], util=np.zeros(6), threshold=5.0,
                     max_gap_s=90)
    assert second.low_since == ts[125] and not is_idle(second, 3600)


def test_a_gap_between_cycles_longer_than_allowed_breaks_the_run() -> None:
    ts = np.arange(200, dtype=float) * STEP
    first = advance(None, pod="a-0", namespace="ml", timestamps=ts[:100], util=np.zeros(100), threshold=5.0,
                    max_gap_s=90)
    later = advance(first, pod="a-0", namespace="ml", timestamps=ts[110:200], util=np.zeros(90), threshold=5.0,
                    max_gap_s=90)
    assert later.low_since == ts[110]


def test_busy_seconds_weight_time_by_utilisation_and_skip_missing_and_old_samples() -> None:
    ts = np.array([0.0, 30.0, 60.0, 90.0]) + 86400 * 3 - 30  # the first sample on day 2
    util = np.array([[100.0, 50.0, np.nan, 250.0], [100.0, 10.0, 10.0, 10.0]])
    out = busy_seconds(ts, util, after=np.array([ts[0], ts[2]]), step_s=30.0)
    assert out[2][0].tolist() == [0.0, 0.0]  # day 2's only sample is not newer than either GPU's last
    provisioned, busy = out[3]
    assert provisioned.tolist() == [60.0, 30.0] and busy.tolist() == [45.0, 3.0]


@pytest.mark.parametrize(("pod", "workload"), [
    ("llama-7b-5d8f9c7b6d-x2k4q", "llama-7b"), ("vllm-0", "vllm"), ("trainer", "trainer"),
    ("web-7c9d6b5f8-abcde", "web-7c9d6b5f8-abcde"),  # 'a' and 'e' never appear in generated suffixes
])
def test_a_pods_workload_comes_from_its_generated_name(pod: str, workload: str) -> None:
    assert workload_of(pod) == workload
