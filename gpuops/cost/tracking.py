"""Each GPU's allocation and idleness, carried from one detection cycle to the next (pure: numpy, no I/O).

A GPU is *low* while a pod is bound to it and every utilisation sample is under the threshold; a sample at or above
it, a missing sample (NaN: unknown, never idle), a pod change or a pod's departure breaks the run. It is *idle* once
it has been low without a break for `idle_after_s`: a notebook between cells or a job writing a checkpoint for a few
minutes goes back to busy long before that and is never listed."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from detectors.frame import FleetFrame

FloatArray = npt.NDArray[np.float64]
UTIL = "DCGM_FI_DEV_GPU_UTIL"               # percent
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # a fraction: used where GPU_UTIL has no sample
BUSY, LOW, UNKNOWN, FREE = "busy", "low", "unknown", "free"

# A Deployment's pod: <deployment>-<pod-template-hash>-<5 characters>; a StatefulSet's: <name>-<ordinal>.
_DEPLOYMENT_POD = re.compile(r"^(?P<name>.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$")
_STATEFUL_POD = re.compile(r"^(?P<name>.+)-\d+$")


def workload_of(pod: str) -> str:
    """The Deployment (or StatefulSet) a pod belongs to, from its name as Kubernetes generates it; a pod named
    otherwise is its own workload."""
    for pattern in (_DEPLOYMENT_POD, _STATEFUL_POD):
        match = pattern.match(pod)
        if match:
            return match.group("name")
    return pod


@dataclass(frozen=True)
class GpuTrack:
    """What the tracker carries for one GPU between cycles (times in unix seconds, data time)."""

    pod: str
    namespace: str
    state: str
    low_since: float | None
    seen_at: float


def utilisation(frame: FleetFrame) -> FloatArray:
    """Per-GPU utilisation in percent `[gpu, time]`: GPU_UTIL, else the graphics engine's active fraction; NaN where
    neither has a sample."""
    util = frame.metric(UTIL)
    active = frame.metric(ENGINE_ACTIVE)
    out = np.full((frame.n_gpus, frame.n_steps), np.nan) if util is None else util.astype(np.float64)
    if active is not None:
        out = np.where(np.isnan(out), active * 100.0, out)
    return out


def advance(previous: GpuTrack | None, *, pod: str, namespace: str, timestamps: FloatArray, util: FloatArray,
            threshold: float, max_gap_s: float) -> GpuTrack:
    """The GPU's track after `timestamps` (only samples newer than `previous.seen_at` count). A gap longer than
    `max_gap_s` since the previous cycle breaks a low run like a missing sample does."""
    after = previous.seen_at if previous is not None else -np.inf
    new = timestamps > after
    ts, u = timestamps[new], util[new]
    if len(ts) == 0:
        return previous if previous is not None else GpuTrack(pod, namespace, UNKNOWN, None, float("-inf"))
    last = float(ts[-1])
    if not pod:
        return GpuTrack(pod, namespace, FREE, None, last)
    breaks = np.isnan(u) | (np.nan_to_num(u, nan=np.inf) >= threshold)
    if bool(breaks[-1]):
        return GpuTrack(pod, namespace, UNKNOWN if np.isnan(u[-1]) else BUSY, None, last)
    broken = np.flatnonzero(breaks)
    if len(broken):
        return GpuTrack(pod, namespace, LOW, float(ts[broken[-1] + 1]), last)
    carried = (previous is not None and previous.state == LOW and previous.low_since is not None
               and previous.pod == pod and previous.namespace == namespace
               and float(ts[0]) - previous.seen_at <= max_gap_s)
    assert previous is not None or not carried
    since = previous.low_since if carried and previous is not None else float(ts[0])
    return GpuTrack(pod, namespace, LOW, since, last)


def is_idle(track: GpuTrack, idle_after_s: float) -> bool:
    """Low without a break for at least `idle_after_s`, up to its last sample."""
    return track.state == LOW and track.low_since is not None and track.seen_at - track.low_since >= idle_after_s


def unseen(track: GpuTrack, at: float) -> GpuTrack:
    """A GPU absent from a cycle's frame: unknown from then on (its run is broken)."""
    return replace(track, state=UNKNOWN, low_since=None, seen_at=max(track.seen_at, at))


def busy_seconds(timestamps: FloatArray, util: FloatArray, *, after: float, step_s: float
                 ) -> dict[int, tuple[float, float]]:
    """GPU-seconds (provisioned, busy) per UTC day number of the samples newer than `after` that have a utilisation
    sample: each sample stands for one step; busy weights it by utilisation (capped at 100 %)."""
    keep = (timestamps > after) & ~np.isnan(util)
    out: dict[int, tuple[float, float]] = {}
    days = np.floor(timestamps[keep] / 86400.0).astype(np.int64)
    weights = np.clip(util[keep], 0.0, 100.0) / 100.0
    for day in np.unique(days).tolist():
        mask = days == day
        out[int(day)] = (float(mask.sum()) * step_s, float(weights[mask].sum()) * step_s)
    return out
