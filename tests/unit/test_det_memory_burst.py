"""Memory heading for failure logs correctable errors long before it fails: on the twin, the burst test finds
an SBE storm and a bank running out of spare rows on their own GPU hours ahead, and the scoring counts an ECC
finding as having found either (the same HBM failing); healthy GPUs of the same fleet stay quiet."""

from __future__ import annotations

from typing import Any

import pytest

from detectors import metrics as m
from detectors.anomaly import CounterBurst
from detectors.evaluation import _ts, matches
from detectors.findings import FindingKind
from detectors.pipeline import DetectionCycle
from simulator.recording import cycle_frames
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin


@pytest.mark.parametrize("fault", [
    {"kind": "row_remap_exhaustion", "lead": "6h"},
    {"kind": "ecc_sbe_storm", "lead": "4h", "peak_sbe_per_min": 2.0},  # the generator's smallest peak
])
def test_a_failing_memory_is_found_by_its_burst_hours_before_it_fails(fault: dict[str, Any]) -> None:
    twin = Twin(scenario_from_dict({
        "name": "burst", "seed": 11, "fleet": {"nodes": 2, "gpus_per_node": 8}, "duration": "4h", "step": "30s",
        "workloads": [{"type": "training", "name": "train", "nodes": 2}],
        "faults": [{"node": "gpu-node-001", "gpu": 3, "at": "40m", **fault}],
    }))
    cycle = DetectionCycle(stages=[CounterBurst(m.ECC_SBE_VOL_TOTAL, FindingKind.ECC)])
    found = [f for frame in cycle_frames(twin, 8) for f in cycle.update(frame)]
    (truth,) = twin.truth()["faults"]
    assert found and {(f.hostname, f.gpu) for f in found} == {("gpu-node-001", 3)}
    assert matches(truth, found[0])
    assert _ts(truth["failure_at"]) - found[0].ts > 1800  # well before it fails
