"""Streaming plumbing shared by the detectors: stable GPU slots across cycles, the new-samples view of a
frame, and onset tracking so a condition is reported once when it starts, not on every cycle."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.findings import Finding
from detectors.frame import FleetFrame, FloatArray, GpuLabels

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

REFERENCE_STEP_S = 15.0  # the scrape interval a frame of one sample is taken to have


@dataclass
class ScrapeInterval:
    """The scrape interval in data time: the median of the latest spacings between samples, so a gap in the
    data does not move it and a frame of one sample still knows it."""

    spacings: deque[float] = field(default_factory=lambda: deque(maxlen=32))

    def follow(self, timestamps: FloatArray, last_ts: float) -> float:
        ts = timestamps if not math.isfinite(last_ts) else np.concatenate([[last_ts], timestamps])
        self.spacings.extend(float(d) for d in np.diff(ts) if d > 0)
        return float(np.median(self.spacings)) if self.spacings else REFERENCE_STEP_S


def samples_in(seconds: float, step_s: float, at_least: int = 2) -> int:
    """How many samples in a row span `seconds` of data time at a scrape every `step_s`. Never fewer than
    `at_least`: one sample is a glitch at any scrape interval. Durations are data time so that a detector
    means the same at 15 s, 30 s or 60 s: counted in samples, a 60 s scrape would stretch every persistence
    and every memory fourfold, and a 5 s scrape would cut them to a third."""
    return max(at_least, round(seconds / step_s))


def rate_per_sample(half_life_s: float, step_s: float) -> float:
    """The weight of a new sample in a moving average that forgets half of its past in `half_life_s`."""
    return float(1.0 - 0.5 ** (step_s / half_life_s))


def grow(arr: npt.NDArray[Any], n: int, fill: Any) -> npt.NDArray[Any]:
    """`arr` extended along its first axis to `n` entries, new entries set to `fill`."""
    if arr.shape[0] >= n:
        return arr
    extra = np.full((n - arr.shape[0], *arr.shape[1:]), fill, dtype=arr.dtype)
    return np.concatenate([arr, extra])


@dataclass
class SlotIndex:
    """Maps a GPU's identity (hostname, gpu index) to a stable slot number kept across cycles."""

    keys: list[tuple[str, int]] = field(default_factory=list)
    uuids: list[str] = field(default_factory=list)
    _by_key: dict[tuple[str, int], int] = field(default_factory=dict)
    _cache: tuple[GpuLabels, IntArray] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def slots_of(self, labels: GpuLabels) -> IntArray:
        """Slot of each row of `labels`, allocating slots for GPUs seen for the first time."""
        if self._cache is not None and self._cache[0] == labels:
            return self._cache[1]
        out = np.empty(len(labels), dtype=np.int64)
        for row, key in enumerate(zip(labels.hostname, labels.gpu, strict=True)):
            slot = self._by_key.get(key)
            if slot is None:
                slot = len(self.keys)
                self._by_key[key] = slot
                self.keys.append(key)
                self.uuids.append(labels.uuid[row])
            else:
                self.uuids[slot] = labels.uuid[row]
            out[row] = slot
        self._cache = (labels, out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self.keys, "uuids": self.uuids}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.keys = state["keys"]
        self.uuids = state["uuids"]
        self._by_key = {k: i for i, k in enumerate(self.keys)}
        self._cache = None


@dataclass(frozen=True)
class CycleView:
    """The part of a frame a cycle has not seen yet: columns `new` of the frame, rows mapped to slots."""

    frame: FleetFrame
    slots: IntArray
    index: SlotIndex
    start: int  # first new column of the frame
    step_s: float = REFERENCE_STEP_S  # the scrape interval in data time (DetectionCycle follows it)

    @property
    def n_slots(self) -> int:
        return len(self.index)

    @property
    def timestamps(self) -> FloatArray:
        return self.frame.timestamps[self.start:]

    def samples(self, seconds: float, at_least: int = 2) -> int:
        """`seconds` of data time in samples at this frame's scrape interval (`samples_in`)."""
        return samples_in(seconds, self.step_s, at_least)

    @property
    def n_new(self) -> int:
        return self.frame.n_steps - self.start

    def metric(self, name: str) -> FloatArray | None:
        """New columns `[row, new_t]` of a metric, or None when the frame has no such series."""
        arr = self.frame.metric(name)
        return None if arr is None else arr[:, self.start:]

    def node_metric(self, name: str) -> FloatArray | None:
        arr = self.frame.node_metrics.get(name)
        return None if arr is None else arr[:, self.start:]

    def columns(self) -> Iterator[tuple[int, float]]:
        """(index into the new columns, timestamp) in time order."""
        for j, ts in enumerate(self.timestamps):
            yield j, float(ts)


class OnsetTracker:
    """Per-slot on/off state: reports the slots that switch on, so each episode is reported once."""

    def __init__(self) -> None:
        self.active: BoolArray = np.zeros(0, dtype=bool)

    def step(self, slots: IntArray, on: BoolArray, off: BoolArray | None = None) -> IntArray:
        """Rows (indices into `slots`) whose condition starts now. `off` re-arms; default: not `on`."""
        self.active = grow(self.active, int(slots.max(initial=-1)) + 1, False)
        was = self.active[slots]
        onset = on & ~was
        release = ~on if off is None else off & ~on
        self.active[slots[on]] = True
        self.active[slots[release]] = False
        return np.flatnonzero(onset)


def finding_rows(labels: GpuLabels, findings: list[Finding]) -> list[int | None]:
    """The frame row of each finding's GPU (None for a node-level finding or a GPU not in the frame)."""
    row_of = {(h, g): r for r, (h, g) in enumerate(zip(labels.hostname, labels.gpu, strict=True))}
    return [row_of.get((f.hostname, f.gpu)) if f.gpu is not None else None for f in findings]


def gpu_finding_fields(view: CycleView, row: int) -> dict[str, Any]:
    """hostname, gpu and uuid of a frame row, as Finding keyword arguments."""
    labels = view.frame.gpus
    return {"hostname": labels.hostname[row], "gpu": labels.gpu[row], "uuid": labels.uuid[row]}


def finite_or_none(x: float) -> float | None:
    """A JSON-safe number: None for NaN or infinity."""
    return float(x) if np.isfinite(x) else None
