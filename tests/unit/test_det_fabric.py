"""The fabric detector on synthetic frames: hard states reported once at their onset and again only after they
cleared, symbol errors as a rate on their first three cycles, a vanished HCA, a flap, a slower port; a frame
without fabric series gives nothing."""

from __future__ import annotations

import numpy as np

from detectors.fabric import FabricStage
from detectors.frame import FleetFrame, GpuLabels
from detectors.stream import CycleView, SlotIndex

HCAS = (("n1", "mlx5_0", "1"), ("n1", "mlx5_1", "1"), ("n2", "mlx5_0", "1"))
GPUS = GpuLabels(hostname=("n1", "n1", "n2"), gpu=(0, 1, 0), uuid=("a", "b", "c"), model_name=("H100",) * 3,
                 pod=("train-0-worker-0", "train-0-worker-1", ""), namespace=("ml", "ml", ""))


class Fleet:
    def __init__(self) -> None:
        self.t = 0.0
        self.state = np.full(3, 4.0)
        self.rate = np.full(3, 5e10)
        self.downed = np.zeros(3)
        self.symbols = np.zeros(3)
        self.present = np.ones(3, dtype=bool)

    def frame(self, steps: int = 4, symbols_per_step: float = 0.0) -> FleetFrame:
        ts, cols = [], {k: [] for k in ("state", "rate", "downed", "symbols")}
        for _ in range(steps):
            self.t += 15.0
            self.symbols[2] += symbols_per_step
            ts.append(self.t)
            for name in cols:
                values = getattr(self, name).copy()
                values[~self.present] = np.nan
                cols[name].append(values)
        names = {"state": "node_infiniband_state_id", "rate": "node_infiniband_rate_bytes_per_second",
                 "downed": "node_infiniband_link_downed_total", "symbols": "node_infiniband_symbol_error_total"}
        return FleetFrame(np.array(ts), GPUS, {}, (), {}, HCAS,
                          {names[k]: np.stack(v, axis=1) for k, v in cols.items()})


def run(stage: FabricStage, frame: FleetFrame) -> list[tuple[str, str, str, str]]:
    view = CycleView(frame=frame, slots=SlotIndex().slots_of(frame.gpus), index=SlotIndex(), start=0)
    return [(f.hostname, str(f.evidence["device"]), str(f.evidence["condition"]), str(f.severity))
            for f in stage.update(view)]


def test_a_down_port_is_one_fact_until_it_clears() -> None:
    fleet, stage = Fleet(), FabricStage()
    assert run(stage, fleet.frame()) == []
    fleet.state[1], fleet.downed[1] = 1.0, 1.0
    frame = fleet.frame()
    found = stage.update(CycleView(frame=frame, slots=SlotIndex().slots_of(GPUS), index=SlotIndex(), start=0))
    assert [(f.hostname, f.gpu, f.kind, f.evidence["condition"], f.evidence["hca"], f.evidence["job"])
            for f in found] == [("n1", None, "fabric", "link_down", 1, "ml/train-0")]
    assert run(stage, fleet.frame()) == []
    fleet.state[1] = 4.0
    assert run(stage, fleet.frame()) == []
    fleet.state[1] = 1.0  # down again (without a new link-down count, so no flap): a new fact
    assert run(stage, fleet.frame()) == [("n1", "mlx5_1", "link_down", "critical")]


def test_symbol_errors_are_a_rate_reported_on_three_cycles() -> None:
    fleet, stage = Fleet(), FabricStage()
    run(stage, fleet.frame())
    assert run(stage, fleet.frame(symbols_per_step=5)) == []  # 1/3 per second: below the limit
    seen = [run(stage, fleet.frame(symbols_per_step=600)) for _ in range(5)]
    assert seen == [[("n2", "mlx5_0", "symbol_errors", "warning")]] * 3 + [[], []]


def test_a_lost_hca_a_flap_and_a_slower_port() -> None:
    fleet, stage = Fleet(), FabricStage()
    run(stage, fleet.frame())
    fleet.present[0] = False
    fleet.rate[2] = 2.5e10
    assert sorted(run(stage, fleet.frame())) == [("n1", "mlx5_0", "hca_lost", "critical"),
                                                 ("n2", "mlx5_0", "link_degraded", "critical")]
    fleet.downed[1] += 1
    assert run(stage, fleet.frame()) == []  # one link-down that came back up: not yet a flap
    fleet.downed[1] += 2
    assert run(stage, fleet.frame()) == [("n1", "mlx5_1", "link_flap", "critical")]


def test_no_fabric_series_no_findings() -> None:
    frame = FleetFrame(np.array([15.0]), GPUS, {})
    assert run(FabricStage(), frame) == []


def test_a_cycle_saved_before_the_fabric_stage_gains_it_when_restored() -> None:
    from detectors.pipeline import DetectionCycle, default_stages

    old = DetectionCycle([s for s in default_stages() if s.name != "fabric"])
    restored = DetectionCycle.from_state(old.state_bytes())
    names = [s.name for s in restored.stages]
    assert names.count("fabric") == 1 and names == [s.name for s in default_stages()]
