"""The detector benchmark runs end to end on a small fleet (the full size runs under `make bench`)."""

from __future__ import annotations

from bench.detectors import bench_cycle


def test_cycle_benchmark_reports_time_and_floor_on_a_small_fleet() -> None:
    result = bench_cycle(n_gpus=64, warm_steps=30, timed=3)
    assert result["gpus"] == 64 and result["metrics"] == 20
    assert result["cycle_ms_median"] > 0 and result["numpy_floor_ms"] > 0
    assert result["findings_on_healthy_fleet"] == 0
