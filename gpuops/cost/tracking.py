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
from domain.jobs import DEPLOYMENT_SUFFIX

FloatArray = npt.NDArray[np.float64]
UTIL = "DCGM_FI_DEV_GPU_UTIL"               # percent
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # a fraction: used where GPU_UTIL has no sample
BUSY, LOW, UNKNOWN, FREE = "busy", "low", "unknown", "free"

# A StatefulSet's pod: <name>-<ordinal> (a Deployment's: domain.jobs.DEPLOYMENT_SUFFIX).
_STATEFUL_POD = re.compile(r"^(?P<name>.+)-\d+$")


def workload_of(pod: str) -> str:
    """The Deployment (or StatefulSet) a pod belongs to, from its name as Kubernetes generates it; a pod named
    otherwise is its own workload."""
    if (deployment := DEPLOYMENT_SUFFIX.sub("", pod)) and deployment != pod:
        return deployment
    match = _STATEFUL_POD.match(pod)
    return match.group("name") if match else pod


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


@dataclass(frozen=True)
class Tracks:
    """Many GPUs' tracks at once (row i of every array is GPU i); `low_since` NaN where there is no low run and
    `seen_at` -inf for a GPU never seen."""

    pod: tuple[str, ...]
    namespace: tuple[str, ...]
    state: tuple[str, ...]
    low_since: FloatArray
    seen_at: FloatArray

    def row(self, i: int) -> GpuTrack:
        since = float(self.low_since[i])
        return GpuTrack(self.pod[i], self.namespace[i], self.state[i], None if np.isnan(since) else since,
                        float(self.seen_at[i]))

    @staticmethod
    def of(tracks: list[GpuTrack | None]) -> Tracks:
        """Tracks from single ones (None: never seen)."""
        return Tracks(pod=tuple(t.pod if t else "" for t in tracks),
                      namespace=tuple(t.namespace if t else "" for t in tracks),
                      state=tuple(t.state if t else UNKNOWN for t in tracks),
                      low_since=np.array([np.nan if t is None or t.low_since is None else t.low_since
                                          for t in tracks], dtype=np.float64),
                      seen_at=np.array([t.seen_at if t else -np.inf for t in tracks], dtype=np.float64))


def advance_all(previous: Tracks, *, pods: tuple[str, ...], namespaces: tuple[str, ...], timestamps: FloatArray,
                util: FloatArray, threshold: float, max_gap_s: float) -> Tracks:
    """Every GPU's track after `timestamps` (`util` is `[gpu, time]`; only samples newer than a GPU's `seen_at`
    count). A gap longer than `max_gap_s` since the previous cycle breaks a low run like a missing sample does; a
    GPU with no newer sample keeps its track."""
    n, t = util.shape
    if t == 0:
        return previous
    new = timestamps[None, :] > previous.seen_at[:, None]
    has_new = np.asarray(new.any(axis=1), dtype=bool)
    first_new = np.argmax(new, axis=1)
    breaks = (np.isnan(util) | (np.nan_to_num(util, nan=np.inf) >= threshold)) & new
    last_break = np.where(breaks, np.arange(t)[None, :], -1).max(axis=1)
    bound = np.array([bool(p) for p in pods], dtype=bool)
    same = np.array([pods[i] == previous.pod[i] and namespaces[i] == previous.namespace[i] for i in range(n)],
                    dtype=bool)
    carried = (same & (np.array(previous.state) == LOW) & ~np.isnan(previous.low_since)
               & (timestamps[first_new] - previous.seen_at <= max_gap_s))
    since = np.where(last_break >= 0, timestamps[np.minimum(last_break + 1, t - 1)],
                     np.where(carried, previous.low_since, timestamps[first_new]))
    last_nan = np.isnan(util[:, -1])
    state = np.where(~bound, FREE, np.where(last_break == t - 1, np.where(last_nan, UNKNOWN, BUSY), LOW))
    low = bound & (last_break < t - 1)
    return Tracks(
        pod=tuple(pods[i] if has_new[i] else previous.pod[i] for i in range(n)),
        namespace=tuple(namespaces[i] if has_new[i] else previous.namespace[i] for i in range(n)),
        state=tuple(str(state[i]) if has_new[i] else previous.state[i] for i in range(n)),
        low_since=np.where(has_new, np.where(low, since, np.nan), previous.low_since),
        seen_at=np.where(has_new, timestamps[-1], previous.seen_at))


def advance(previous: GpuTrack | None, *, pod: str, namespace: str, timestamps: FloatArray, util: FloatArray,
            threshold: float, max_gap_s: float) -> GpuTrack:
    """One GPU's track after `timestamps` (see `advance_all`)."""
    tracks = advance_all(Tracks.of([previous]), pods=(pod,), namespaces=(namespace,), timestamps=timestamps,
                         util=util[None, :], threshold=threshold, max_gap_s=max_gap_s)
    return tracks.row(0)


def is_idle(track: GpuTrack, idle_after_s: float) -> bool:
    """Low without a break for at least `idle_after_s`, up to its last sample."""
    return track.state == LOW and track.low_since is not None and track.seen_at - track.low_since >= idle_after_s


def unseen(track: GpuTrack, at: float) -> GpuTrack:
    """A GPU absent from a cycle's frame: unknown from then on (its run is broken)."""
    return replace(track, state=UNKNOWN, low_since=None, seen_at=max(track.seen_at, at))


def busy_seconds(timestamps: FloatArray, util: FloatArray, *, after: FloatArray, step_s: float
                 ) -> dict[int, tuple[FloatArray, FloatArray]]:
    """Per UTC day number, each GPU's GPU-seconds (provisioned, busy) from its samples newer than its `after` that
    have a utilisation sample (`util` is `[gpu, time]`): each sample stands for one step; busy weights it by
    utilisation (capped at 100 %)."""
    keep = (timestamps[None, :] > after[:, None]) & ~np.isnan(util)
    weights = np.where(keep, np.clip(np.nan_to_num(util), 0.0, 100.0) / 100.0, 0.0)
    days = np.floor(timestamps / 86400.0).astype(np.int64)
    out: dict[int, tuple[FloatArray, FloatArray]] = {}
    for day in np.unique(days).tolist():
        in_day = (days == day)[None, :]
        out[int(day)] = ((keep & in_day).sum(axis=1) * step_s, (weights * in_day).sum(axis=1) * step_s)
    return out
