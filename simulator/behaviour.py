"""What healthy workloads really do, step by step: the phases a detector must not page on.

Training stalls at every checkpoint with its memory held, runs evaluation at a lower load, and now and
then waits on its data loader (one rank or all); online inference is lower at weekends and bursts for
minutes; notebooks sit idle for hours holding memory and burst now and then; batch inference runs flat
out. The WorkloadBook asks this module for these shapes only when the scenario turns them on, so a
scenario without them draws exactly the random numbers it drew before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.healthy_spec import (
    BatchWorkload,
    Healthy,
    InferenceBehaviour,
    NotebookWorkload,
    TrainingBehaviour,
)
from simulator.physics import Load
from simulator.scenario import TrainingWorkload

WEEKDAY_OF_EPOCH = 3  # 1970-01-01 was a Thursday (Monday = 0)
LEGACY_CHECKPOINT_S = 90.0  # the dip the twin drew before checkpoints had a length


def weekday(t: float) -> int:
    """Day of the week of unix time `t` in UTC, Monday = 0 … Sunday = 6."""
    return (int(t // 86400.0) + WEEKDAY_OF_EPOCH) % 7


@dataclass
class _Stall:
    until: float
    rows: Any  # the rows that wait (one rank's GPU, or every rank)
    depth: float  # share of the load left while waiting


class WorkloadBehaviour:
    """Per-job and per-row phase state of healthy workloads; draws from its own random stream."""

    def __init__(self, healthy: Healthy, rng: np.random.Generator, step_s: float) -> None:
        self.training_spec: TrainingBehaviour = healthy.training
        self.inference_spec: InferenceBehaviour = healthy.inference
        self.shapes_training = healthy.training != TrainingBehaviour()
        self.shapes_inference = healthy.inference != InferenceBehaviour()
        self.rng = rng
        self.step_s = step_s
        self._job: dict[str, tuple[float, float, float]] = {}  # checkpoint stall, eval offset, eval length
        self._stalls: dict[str, _Stall] = {}
        self._bursts: dict[str, tuple[float, float]] = {}  # deployment -> (until, factor)
        self._notebook_fb: dict[int, float] = {}
        self._notebook_burst: dict[int, tuple[float, float]] = {}  # row -> (until, load)

    # ------------------------------------------------------------------ training

    def _job_constants(self, name: str) -> tuple[float, float, float]:
        if name not in self._job:
            spec, rng = self.training_spec, self.rng
            stall = float(rng.uniform(*spec.checkpoint_stall)) if spec.checkpoint_stall else LEGACY_CHECKPOINT_S
            self._job[name] = (stall, float(rng.uniform(0, 1)), float(rng.uniform(*spec.eval_length)))
        return self._job[name]

    def training_phase(self, job: TrainingWorkload, t: float, checkpoint_offset: float) -> str:
        """`checkpoint`, `eval` or `train`: what a complete job is doing at `t`."""
        stall, eval_offset, eval_len = self._job_constants(job.name)
        period = job.checkpoint_every
        if period > 0 and ((t / period + checkpoint_offset) % 1.0) * period < stall:
            return "checkpoint"
        every = self.training_spec.eval_every
        if every and ((t / every + eval_offset) % 1.0) * every < eval_len:
            return "eval"
        return "train"

    def training(
        self, job: TrainingWorkload, t: float, idx: Any, complete: bool, checkpoint_offset: float,
        fb_mib: float, out: Load,
    ) -> None:
        """Fill the job's rows of `out`: memory always held, load by phase, dips where the loader waits."""
        phase = self.training_phase(job, t, checkpoint_offset) if complete else "waiting"
        level = {"train": job.intensity, "eval": job.intensity * self.training_spec.eval_load}.get(phase, 0.0)
        rows = np.full(len(idx), level)
        if phase in ("train", "eval"):
            rows *= self._loader_wait(job.name, t, len(idx))
            rows *= 1.0 + self.rng.normal(0, 0.004) + self.rng.normal(0, 0.003, len(idx))
        out.load[idx] = np.clip(rows, 0.0, 1.0)
        out.fb_mib[idx] = fb_mib * (1.0 + self.rng.normal(0, 0.002, len(idx)))
        evaluating = phase == "eval"
        out.tensor_share[idx] = 0.35 if evaluating else 0.55
        out.dram_share[idx] = 0.5 if evaluating else 0.35
        out.nvlink_share[idx] = 0.08 if evaluating else 0.4

    def _loader_wait(self, name: str, t: float, n: int) -> Any:
        """Per-row share of load left: 1 except while the data loader stalls (one rank or the whole job)."""
        factor = np.ones(n)
        stall = self._stalls.get(name)
        if stall is not None and stall.until > t:
            factor[stall.rows] = stall.depth
            return factor
        rate = self.training_spec.loader_stalls_per_hour / 3600.0
        if rate <= 0 or self.rng.random() >= 1.0 - math.exp(-rate * self.step_s):
            return factor
        length = float(self.rng.uniform(*self.training_spec.loader_stall_length))
        # A stall shorter than a sample shows as a partial dip in that sample's utilisation.
        depth = 0.05 + 0.95 * max(0.0, 1.0 - length / self.step_s)
        rows = np.arange(n) if self.rng.random() < 0.5 else np.asarray([int(self.rng.integers(0, n))])
        self._stalls[name] = _Stall(t + max(length, self.step_s) - 1e-6, rows, depth)
        factor[rows] = depth
        return factor

    # ------------------------------------------------------------------ online inference

    def inference_factor(self, name: str, t: float) -> float:
        """The weekly shape times any burst running now, for one deployment."""
        spec = self.inference_spec
        factor = spec.weekend_factor if weekday(t) >= 5 else 1.0
        until, burst = self._bursts.get(name, (0.0, 1.0))
        if until > t:
            return factor * burst
        rate = spec.bursts_per_day / 86400.0
        if rate > 0 and self.rng.random() < 1.0 - math.exp(-rate * self.step_s):
            burst = float(self.rng.uniform(*spec.burst_factor))
            self._bursts[name] = (t + float(self.rng.uniform(*spec.burst_length)), burst)
            return factor * burst
        return factor

    # ------------------------------------------------------------------ notebooks and batch

    def notebook(self, spec: NotebookWorkload, t: float, idx: Any, out: Load) -> None:
        """Idle with the kernel's memory held; now and then a burst of work (a cell that trains or infers)."""
        p_burst = 1.0 - math.exp(-spec.bursts_per_day / 86400.0 * self.step_s)
        for row in np.asarray(idx).tolist():
            fb = self._notebook_fb.setdefault(row, float(self.rng.uniform(*spec.memory_gib)) * 1024.0)
            until, load = self._notebook_burst.get(row, (0.0, 0.0))
            if until <= t and self.rng.random() < p_burst:
                until = t + float(self.rng.uniform(*spec.burst_length))
                load = float(self.rng.uniform(*spec.burst_load))
                self._notebook_burst[row] = (until, load)
            busy = until > t
            out.load[row] = min(1.0, load * (1.0 + self.rng.normal(0, 0.05))) if busy else 0.0
            out.fb_mib[row] = fb + (4096.0 if busy else 0.0)
            out.tensor_share[row] = 0.4
            out.dram_share[row] = 0.4
            out.nvlink_share[row] = 0.0

    def notebook_stopped(self, rows: list[int]) -> None:
        """A notebook pod went away: its successor on these rows loads its own kernel."""
        for row in rows:
            self._notebook_fb.pop(row, None)
            self._notebook_burst.pop(row, None)

    def batch(self, spec: BatchWorkload, idx: Any, fb_mib: float, out: Load) -> None:
        """Flat-out offline inference: steady high load and a full KV cache."""
        n = len(idx)
        out.load[idx] = np.clip(spec.load * (1.0 + self.rng.normal(0, 0.01, n)), 0.0, 1.0)
        out.fb_mib[idx] = fb_mib
        out.tensor_share[idx] = 0.45
        out.dram_share[idx] = 0.55
        out.nvlink_share[idx] = 0.05 if spec.gpus_per_pod > 1 else 0.0
