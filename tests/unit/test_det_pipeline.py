"""The detection cycle: streaming equals one-shot, causality, state hand-over between workers."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import metrics as m
from detectors.findings import Finding
from detectors.frame import FleetFrame
from detectors.pipeline import DetectionCycle
from detectors.stream import REFERENCE_STEP_S, ScrapeInterval
from tests.unit import det_synth


def faulty_frame() -> FleetFrame:
    """A fleet with one fault of most kinds, at different times."""
    ts, met, gpus, nodes, nm = det_synth.healthy(nodes=4, gpus_per_node=8, steps=400, jobs=2)
    met[m.XID_ERRORS][3, 220:] = 48
    met[m.ECC_DBE_VOL_TOTAL][3, 220:] = 1
    for arr in met.values():
        arr[12, 300:] = np.nan
    nm[m.NODE_READY][3, 250:] = 0
    met[m.GPU_TEMP][20, 200:] += np.linspace(0, 40, 200)
    met[m.ECC_SBE_VOL_TOTAL][25, 230:] += np.cumsum(np.full(170, 5.0))
    met[m.GPU_UTIL][17, 260:] = 20.0
    met[m.GR_ENGINE_ACTIVE][17, 260:] = 0.2
    met[m.FB_USED][30, 150:] += np.linspace(0, 21_000, 250)
    return det_synth.frame(ts, met, gpus, nodes, nm)


def run_in_chunks(f: FleetFrame, size: int, overlap: int) -> list[Finding]:
    cycle = DetectionCycle()
    out: list[Finding] = []
    for part in det_synth.chunks(f, size, overlap):
        out.extend(cycle.update(part))
    return out


def as_json(findings: list[Finding]) -> list[dict[str, object]]:
    return [f.to_json() for f in findings]


@pytest.fixture(scope="module")
def in_chunks_of_10() -> list[Finding]:
    """The faulty frame's findings streamed in chunks of 10 overlapping by 3: several tests compare against
    them, and the run is deterministic, so it is done once (findings are frozen)."""
    return run_in_chunks(faulty_frame(), 10, 3)


@pytest.fixture(scope="module")
def one_shot() -> list[Finding]:
    """The faulty frame's findings from one update with the whole frame (deterministic, done once)."""
    return DetectionCycle().update(faulty_frame())


def test_findings_cover_the_injected_faults(in_chunks_of_10: list[Finding]) -> None:
    found = in_chunks_of_10
    kinds = {(f.kind, f.hostname, f.gpu) for f in found}
    assert ("ecc", "gpu-node-001", 3) in kinds
    assert ("gpu_lost", "gpu-node-002", 4) in kinds
    assert ("node_not_ready", "gpu-node-004", None) in kinds
    assert ("thermal", "gpu-node-003", 4) in kinds


def test_streaming_in_overlapping_chunks_equals_one_shot(one_shot: list[Finding]) -> None:
    f = faulty_frame()
    whole = as_json(one_shot)
    assert whole
    assert as_json(run_in_chunks(f, 7, 4)) == whole
    assert as_json(run_in_chunks(f, 1, 0)) == whole


@pytest.mark.parametrize("cut", [221, 305])
def test_findings_are_causal(cut: int, in_chunks_of_10: list[Finding]) -> None:
    f = faulty_frame()
    t = float(f.timestamps[cut])
    full = [x for x in as_json(in_chunks_of_10) if x["ts"] <= as_json_ts(t)]
    truncated = as_json(run_in_chunks(f.until(t), 10, 3))
    assert truncated == full


def as_json_ts(t: float) -> str:
    return Finding(ts=t, hostname="h", gpu=None, uuid=None, kind="anomaly", severity="info", score=0.0,
                   detector="d").to_json()["ts"]  # type: ignore[return-value]


def test_state_survives_a_hand_over_between_workers() -> None:
    f = faulty_frame()
    parts = det_synth.chunks(f, 25, 5)
    reference = run_in_chunks(f, 25, 5)
    cycle = DetectionCycle()
    out: list[Finding] = []
    for part in parts:
        cycle = DetectionCycle.from_state(cycle.state_bytes())
        out.extend(cycle.update(part))
    assert as_json(out) == as_json(reference)
    with pytest.raises(ValueError, match="header"):
        DetectionCycle.from_state(b"something else")


def test_every_finding_follows_the_contract(one_shot: list[Finding]) -> None:
    import json

    assert one_shot
    for finding in one_shot:
        obj = json.loads(json.dumps(finding.to_json(), allow_nan=False))
        assert set(obj) == {"ts", "hostname", "gpu", "uuid", "kind", "severity", "score",
                            "predicted_failure_at", "detector", "evidence"}
        assert obj["ts"].endswith("Z")


def test_rows_may_arrive_in_another_order_each_cycle() -> None:
    f = faulty_frame()
    reference = as_json(run_in_chunks(f, 50, 0))
    order = np.random.default_rng(0).permutation(f.n_gpus)
    g = f.gpus
    shuffled_labels = type(g)(**{name: tuple(getattr(g, name)[i] for i in order)
                                 for name in ("hostname", "gpu", "uuid", "model_name", "pod", "namespace",
                                              "container")})
    cycle = DetectionCycle()
    out: list[Finding] = []
    for k, part in enumerate(det_synth.chunks(f, 50, 0)):
        if k % 2:
            part = FleetFrame(timestamps=part.timestamps, gpus=shuffled_labels,
                              metrics={n: a[order] for n, a in part.metrics.items()}, nodes=part.nodes,
                              node_metrics=part.node_metrics)
        out.extend(cycle.update(part))
    assert as_json(out) == reference


def _straggler_and_hang(step_s: float) -> dict[str, float]:
    """When a straggler (from 3,000 s in) and a spinning job (from 4,500 s in) are first reported, in data time
    after their onsets, with the whole default cycle at a scrape every `step_s`."""
    steps = int(12_000 / step_s)
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, steps=steps, step_s=step_s, jobs=2)
    met[m.PIPE_TENSOR_ACTIVE] = met[m.GR_ENGINE_ACTIVE] * 0.55
    slow, spin = int(3000 / step_s), int(4500 / step_s)
    met[m.GR_ENGINE_ACTIVE][3, slow:] = 0.4
    met[m.PIPE_TENSOR_ACTIVE][16:, spin:] = 0.0
    met[m.POWER_USAGE][16:, spin:] = 110.0
    found = DetectionCycle().update(det_synth.frame(ts, met, gpus))
    first = {kind: min(f.ts for f in found if f.kind == kind) for kind in ("straggler", "hung_job")}
    return {"straggler": first["straggler"] - ts[slow], "hung_job": first["hung_job"] - ts[spin]}


def test_durations_are_data_time_at_any_scrape_interval() -> None:
    at_15, at_60 = _straggler_and_hang(15.0), _straggler_and_hang(60.0)
    assert at_15 == {"straggler": 45.0, "hung_job": 165.0}  # 4 and 12 samples at 15 s
    assert at_60 == {"straggler": 60.0, "hung_job": 120.0}  # never less than two samples; 3 samples of 60 s
    # counted in samples, 60 s would have waited four times as long: 180 s and 660 s


def test_the_scrape_interval_is_followed_through_gaps_and_frames_of_one_sample() -> None:
    interval = ScrapeInterval()
    assert interval.follow(np.array([0.0]), -np.inf) == REFERENCE_STEP_S  # nothing to go by yet
    assert interval.follow(np.array([60.0, 120.0, 180.0]), 0.0) == 60.0
    assert interval.follow(np.array([1800.0]), 180.0) == 60.0  # a half-hour gap in the data moves nothing
    assert interval.follow(np.array([1860.0]), 1800.0) == 60.0  # one new sample a cycle still counts
