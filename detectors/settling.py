"""Load settling: after a GPU's load steps (a job starts, stops or moves), its temperature, power, clocks and
memory move to new levels for a while. Soft findings of load-driven kinds from the level detectors (robust
baselines, the multivariate model, node peers) during that time describe the change of load, not a fault;
they are dropped. Hard signals, forecasts (which have their own guard), and the job detectors (stragglers, hung
jobs, overload: their subject is the load itself) are kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind
from detectors.frame import FloatArray
from detectors.stream import CycleView, IntArray, finding_rows, grow

LOAD_DRIVEN_KINDS = frozenset({FindingKind.THERMAL, FindingKind.POWER, FindingKind.ANOMALY})
SETTLING_DETECTORS = ("baseline.", "multivariate.", "peers.node_thermal")


def note_load_steps(ref: FloatArray, changed: FloatArray, slots: IntArray, ts: float, load: FloatArray, *,
                    relative: float, absolute: float,
                    pause: tuple[FloatArray, FloatArray] | None = None) -> None:
    """Follow each slot's load (`ref`, a slow average) and record in `changed` the time of its last step: a
    sample further than max(relative × |ref|, absolute) from the average. Both arrays are updated in place.
    With `pause` (the level before the last step, and that step's predecessor's time), a load that returns to
    the level it left is a pause, not a step: `changed` goes back to what it was before the pause."""
    ok = np.isfinite(load)
    s, v = slots[ok], load[ok]
    r = ref[s]
    first = ~np.isfinite(r)
    jumped = ~first & (np.abs(v - r) > np.maximum(relative * np.abs(r), absolute))
    if pause is not None:
        # back to the level held before the last step (a checkpoint or an evaluation pause over): the pause
        # was no new load, and the time of the step before it stands
        before, before_changed = pause
        back = jumped & np.isfinite(before[s]) & (
            np.abs(v - before[s]) <= np.maximum(relative * np.abs(before[s]), absolute))
        step = jumped & ~back
        before[s] = np.where(step, r, np.where(back, np.nan, before[s]))
        before_changed[s] = np.where(step, changed[s], before_changed[s])
        changed[s] = np.where(step, ts, np.where(back, before_changed[s], changed[s]))
    else:
        changed[s] = np.where(jumped, ts, changed[s])
    ref[s] = np.where(first | jumped, v, r + 0.1 * (v - r))


@dataclass
class LoadSettling:
    metric: str = m.GPU_UTIL
    jump: float = 20.0        # a step in utilisation, in percentage points, against its recent level
    settle_s: float = 1200.0  # about four thermal time constants of a GPU under a heatsink
    ref: FloatArray = field(default_factory=lambda: np.zeros(0))
    changed: FloatArray = field(default_factory=lambda: np.zeros(0))

    def filter(self, view: CycleView, findings: list[Finding]) -> list[Finding]:
        """Track the load through the cycle's new samples and drop the findings made while it settled. A
        finding at time t is judged on the load up to t only."""
        load = view.metric(self.metric)
        if load is None:
            return findings
        n = view.n_slots
        self.ref, self.changed = grow(self.ref, n, np.nan), grow(self.changed, n, -np.inf)
        slots = view.slots
        changed_at: dict[float, FloatArray] = {}
        for j, ts in view.columns():
            note_load_steps(self.ref, self.changed, slots, ts, load[:, j], relative=0.0, absolute=self.jump)
            changed_at[ts] = self.changed[slots].copy()
        if not findings:
            return findings
        kept = []
        for f, row in zip(findings, finding_rows(view.frame.gpus, findings), strict=True):
            at = changed_at.get(f.ts)
            if (row is not None and at is not None and f.kind in LOAD_DRIVEN_KINDS
                    and f.detector.startswith(SETTLING_DETECTORS) and f.ts - at[row] < self.settle_s):
                continue
            kept.append(f)
        return kept
