"""Replay of recorded per-pod GPU telemetry (GenTD26's CSV format) as inference replicas on the twin.

A scenario's `replay:` names two recordings, GPU duty cycle (%) and GPU memory in use (bytes), each a CSV
(plain or gzip) with columns `timestamp_anon` (seconds), `value` and `container_ip`. Every distinct
`container_ip` becomes one replica with a home GPU of its own. The recording's first timestamp maps to the
scenario's start.

A replica's *lives* are its stretches of samples (either metric) with no gap longer than `MAX_GAP_S`: its
pod is Running during a life and absent otherwise, so a pod that went silent for longer and came back is
a new pod, and the GPU carries no pod (idle, no pod label) in between. Within a life each metric holds its
last sample (sample and hold; a shorter gap, or a gap in one metric while the other still reports, is a
missed scrape); before a metric's first sample in a life it takes that first sample. A step of the twin
shows a life from the first step at or after its first sample to the step that covers its last one.

Pods are named and owned like a Deployment's (`<name>-<template hash>-<5 chars>`, owned by ReplicaSet
`<name>-<template hash>`); the twin plays that controller: a pod killed or evicted during a life is
recreated, on its home GPU when that GPU can take it, otherwise left to the scheduler.
"""

from __future__ import annotations

import csv
import gzip
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from simulator.durations import parse_duration
from simulator.kube.errors import NotFound
from simulator.kube.objects import (
    GPU_ANNOTATION,
    STAYS_IN_NODE,
    WORKLOAD_LABEL,
    generated_suffix,
    pod_gpus,
    replica_pod_suffix,
)
from simulator.kube.state import KubeEvent, KubeState
from simulator.physics import Load
from simulator.scenario import (
    InferenceWorkload,
    ReplaySpec,
    Scenario,
    ScenarioError,
    TrainingWorkload,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_GAP_S = 300.0  # a replica silent (both metrics) for longer than this has no pod in between
COLUMNS = ("timestamp_anon", "value", "container_ip")
REPLAY_FIELDS = ("gpu_duty_cycle", "gpu_memory_used_bytes")
NAMESPACE = "inference"  # simulator.workloads.INFERENCE_NAMESPACE (not imported: workloads imports this module)
SOURCE_LABEL = "sim.gpuops.io/replay-source"
MIB = 1024.0 * 1024.0
_GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Series:
    """One metric of one recorded pod: sample times (recording's clock, seconds) and values, time-sorted."""

    times: FloatArray
    values: FloatArray


@dataclass(frozen=True)
class MetricFile:
    """One recording file: its pods in order of first appearance and each pod's series."""

    pods: tuple[str, ...]
    series: Mapping[str, Series]


@dataclass(frozen=True)
class Recording:
    """Both metrics of every recorded pod; `first` and `last` bound every sample of either file."""

    pods: tuple[str, ...]
    duty: Mapping[str, Series]
    memory: Mapping[str, Series]
    first: float
    last: float

    @property
    def span(self) -> float:
        return self.last - self.first


def _line_error(path: Path, line: int, column: str, problem: str) -> ScenarioError:
    return ScenarioError(f"{path} line {line}: field {column!r} {problem}")


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    """The file as text, gunzipped when it starts with gzip's magic bytes (whatever its suffix)."""
    with path.open("rb") as raw:
        magic = raw.read(2)
    if magic == _GZIP_MAGIC:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            yield handle
    else:
        with path.open("r", encoding="utf-8", newline="") as handle:
            yield handle


def _number(row: list[str], index: int, column: str, where: tuple[Path, int], maximum: float) -> float:
    """The numeric cell `index` of a CSV row, finite, non-negative and at most `maximum`."""
    text = row[index].strip() if index < len(row) else ""
    if not text:
        raise _line_error(*where, column, "is missing")
    try:
        value = float(text)
    except ValueError:
        raise _line_error(*where, column, f"is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise _line_error(*where, column, f"is not a finite number: {text!r}")
    if value < 0:
        raise _line_error(*where, column, f"is negative: {text!r}")
    if value > maximum:
        raise _line_error(*where, column, f"is {text}, above {maximum:g} (a duty cycle is a percentage)")
    return value


def _header(reader: Any, path: Path) -> tuple[int, int, int]:
    """Column indices of timestamp_anon, value and container_ip from the header line."""
    header = [cell.strip() for cell in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ScenarioError(
            f"{path} line 1: missing column(s) {', '.join(missing)}; expected a header with {', '.join(COLUMNS)}"
        )
    ts, value, pod = (header.index(c) for c in COLUMNS)
    return ts, value, pod


def _parse_metric(path: Path, maximum: float) -> MetricFile:
    """Read and check every line of one recording file; ScenarioError naming the line and field otherwise."""
    samples: dict[str, tuple[list[float], list[float]]] = {}
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        i_ts, i_value, i_pod = _header(reader, path)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = (path, reader.line_num)
            pod = row[i_pod].strip() if i_pod < len(row) else ""
            if not pod:
                raise _line_error(*where, "container_ip", "is missing")
            ts = _number(row, i_ts, "timestamp_anon", where, math.inf)
            value = _number(row, i_value, "value", where, maximum)
            times, values = samples.setdefault(pod, ([], []))
            times.append(ts)
            values.append(value)
    if not samples:
        raise ScenarioError(f"{path}: no samples after the header")
    series = {}
    for pod, (times, values) in samples.items():
        order = np.argsort(np.asarray(times), kind="stable")
        series[pod] = Series(np.asarray(times)[order], np.asarray(values)[order])
    return MetricFile(tuple(samples), series)


@lru_cache(maxsize=8)
def _cached_metric(path: str, maximum: float, mtime_ns: int, size: int) -> MetricFile:
    # Keyed on the file's identity, so loading a scenario and then building its twin read each file once.
    return _parse_metric(Path(path), maximum)


def read_metric(path: Path, field: str) -> MetricFile:
    """One recording file (`field` is gpu_duty_cycle or gpu_memory_used_bytes); ScenarioError naming the
    field, the file and, for a malformed line, the line and column."""
    maximum = 100.0 if field == "gpu_duty_cycle" else math.inf
    try:
        stat = path.stat()
        return _cached_metric(str(path), maximum, stat.st_mtime_ns, stat.st_size)
    except ScenarioError as exc:
        raise ScenarioError(f"replay.{field}: {exc}") from exc
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(f"replay.{field}: cannot read {path}: {reason}") from exc


def load_recording(spec: ReplaySpec) -> Recording:
    """Both files of a replay (paths as given: absolute, or relative to the working directory)."""
    duty = read_metric(Path(spec.gpu_duty_cycle), "gpu_duty_cycle")
    memory = read_metric(Path(spec.gpu_memory_used_bytes), "gpu_memory_used_bytes")
    pods = duty.pods + tuple(p for p in memory.pods if p not in duty.series)
    every = [s.times for s in duty.series.values()] + [s.times for s in memory.series.values()]
    first = min(float(t[0]) for t in every)
    last = max(float(t[-1]) for t in every)
    return Recording(pods, duty.series, memory.series, first, last)


def trace_duration(recording: Recording, step: float) -> float:
    """`duration: trace`: the recording's length rounded up to whole steps (at least one step)."""
    return max(1, math.ceil(recording.span / step - 1e-9)) * step


# ---------------------------------------------------------------------------------------------- loading


def resolve_replay(data: Any, folder: Path) -> Any:
    """A scenario's parsed YAML with replay paths made absolute from `folder`, the recording read and checked,
    and `duration: trace` replaced by the recording's length; anything malformed is left for validation."""
    if not isinstance(data, dict) or not isinstance(data.get("replay"), dict):
        return data
    replay = dict(data["replay"])
    for field in REPLAY_FIELDS:
        if isinstance(replay.get(field), str):
            replay[field] = str((folder / Path(replay[field]).expanduser()).resolve())
    data = {**data, "replay": replay}
    if not all(isinstance(replay.get(field), str) for field in REPLAY_FIELDS):
        return data
    recording = load_recording(ReplaySpec.model_construct(**{f: replay[f] for f in REPLAY_FIELDS}))
    if data.get("duration") == "trace":
        data["duration"] = _trace_length(recording, data.get("step", Scenario.model_fields["step"].default))
    return data


def _trace_length(recording: Recording, step_value: Any) -> float:
    """`duration: trace` for the scenario's step; a placeholder when the step is invalid (validation says why)."""
    try:
        step = parse_duration(step_value)
    except ValueError:
        return 1.0
    return trace_duration(recording, step) if step > 0 else 1.0


def free_gpu_count(scenario: Scenario) -> int:
    """GPUs left for replay replicas once the scenario's training jobs and inference replicas are placed."""
    fleet = scenario.fleet
    taken = 0
    for spec in scenario.workloads or []:
        if isinstance(spec, TrainingWorkload):
            taken += spec.nodes * fleet.gpus_per_node
        elif isinstance(spec, InferenceWorkload):
            taken += spec.replicas * spec.gpus_per_replica
    return max(0, fleet.n_gpus - taken)


def check_replay_room(scenario: Scenario) -> None:
    """ScenarioError unless every recorded pod can have a GPU of its own."""
    if scenario.replay is None:
        return
    pods = len(load_recording(scenario.replay).pods)
    free = free_gpu_count(scenario)
    if pods > free:
        fleet = scenario.fleet
        raise ScenarioError(
            f"replay: the recording has {pods} pods, each needing a GPU of its own, but the fleet "
            f"({fleet.nodes} nodes × {fleet.gpus_per_node} GPUs) has {free} GPUs free of other workloads; "
            "add nodes or remove workloads"
        )


# ---------------------------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class ReplayGrid:
    """Per replica and scenario step k (time start + k·step): the life it is in (-1: no pod), the load (0..1)
    and the framebuffer (MiB) it asks for."""

    life: IntArray
    load: FloatArray
    fb_mib: FloatArray


def _lives(times: FloatArray) -> list[tuple[float, float]]:
    """Stretches of sample times with no gap longer than MAX_GAP_S."""
    breaks = np.flatnonzero(np.diff(times) > MAX_GAP_S)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(times) - 1]))
    return [(float(times[s]), float(times[e])) for s, e in zip(starts, ends, strict=True)]


def _held(series: Series | None, life: tuple[float, float], at: FloatArray) -> FloatArray:
    """The metric at times `at` within one life: the last sample so far (or the life's first one)."""
    if series is None:
        return np.zeros(len(at))
    lo = int(np.searchsorted(series.times, life[0], "left"))
    hi = int(np.searchsorted(series.times, life[1], "right"))
    if hi <= lo:
        return np.zeros(len(at))
    idx = np.clip(np.searchsorted(series.times, at, "right") - 1, lo, hi - 1)
    return series.values[idx]


def build_grid(recording: Recording, step: float, steps: int) -> ReplayGrid:
    """The replay sampled at the scenario's `steps` + 1 step times."""
    n = len(recording.pods)
    at: FloatArray = recording.first + step * np.arange(steps + 1, dtype=np.float64)
    life = np.full((n, steps + 1), -1, dtype=np.int64)
    load, fb = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    for r, pod in enumerate(recording.pods):
        duty, memory = recording.duty.get(pod), recording.memory.get(pod)
        times = np.union1d(duty.times if duty else [], memory.times if memory else [])
        for j, span in enumerate(_lives(times)):
            k0 = int(np.searchsorted(at, span[0] - 1e-9, "left"))
            k1 = int(np.searchsorted(at, span[1] + step - 1e-9, "left"))
            life[r, k0:k1] = j
            load[r, k0:k1] = _held(duty, span, at[k0:k1]) / 100.0
            fb[r, k0:k1] = _held(memory, span, at[k0:k1]) / MIB
    return ReplayGrid(life, load, fb)


# ---------------------------------------------------------------------------------------------- the pods


def template_hash(name: str) -> str:
    """The pod-template hash of the replay's ReplicaSet (stable per name)."""
    return replica_pod_suffix(f"replay/{name}", b"\0" * 5).split("-")[0]


def replay_pod(name: str, source: str, replica: int, generation: int, home: tuple[str, int] | None) -> dict[str, Any]:
    """The Pod JSON of one replica's pod: bound to its home (node, GPU) when given, else pending."""
    rs = f"{name}-{template_hash(name)}"
    pod_name = f"{rs}-{generated_suffix(f'{name}/{source}/{generation}')}"
    metadata: dict[str, Any] = {
        "name": pod_name,
        "namespace": NAMESPACE,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pods/{NAMESPACE}/{pod_name}")),
        "labels": {"app": name, WORKLOAD_LABEL: f"{name}.{replica:03d}", "pod-template-hash": template_hash(name),
                   SOURCE_LABEL: source},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                             "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"replicasets/{NAMESPACE}/{rs}")),
                             "controller": True, "blockOwnerDeletion": True}],
    }
    spec: dict[str, Any] = {
        "containers": [{"name": "server", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        "terminationGracePeriodSeconds": 30,
        "tolerations": [dict(STAYS_IN_NODE)],
    }
    if home is not None:
        spec["nodeName"] = home[0]
        metadata["annotations"] = {GPU_ANNOTATION: str(home[1])}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class ReplayFleet:
    """The replay's controller on the twin: creates and deletes each replica's pods as the recording says, and
    fills the load of the GPUs they run on."""

    def __init__(
        self,
        spec: ReplaySpec,
        grid: ReplayGrid,
        sources: tuple[str, ...],
        homes: list[tuple[str, int]],
        kube: KubeState,
        gpu_usable: Callable[[str, int], bool],
        clock: tuple[float, float],
    ) -> None:
        self.name = spec.name
        self.start, self.step = clock
        self.grid = grid
        self.sources = sources
        self.homes = homes
        self.kube = kube
        self.gpu_usable = gpu_usable
        self.keys = [f"{spec.name}.{r:03d}" for r in range(len(sources))]
        self.life = np.full(len(sources), -1, dtype=np.int64)  # the life each replica's pod belongs to
        self.pods: list[str | None] = [None] * len(sources)
        self.generation = [0] * len(sources)
        self._replica_of: dict[str, int] = {}

    def column(self, t: float) -> int:
        """The grid column of simulated time `t` (past the scenario's end: one past the grid, where nobody lives)."""
        return min(max(0, round((t - self.start) / self.step)), int(self.grid.life.shape[1]))

    def sync(self, t: float) -> None:
        """Bring the pods to time `t`: end finished lives, start new ones, replace pods lost mid-life."""
        k = self.column(t)
        want = self.grid.life[:, k] if k < self.grid.life.shape[1] else np.full(len(self.sources), -1)
        lost = np.array([pod is None for pod in self.pods]) & (self.life >= 0)
        for r in np.flatnonzero((want != self.life) | lost).tolist():
            self._stop(r)
            self.life[r] = want[r]
            if want[r] >= 0:
                self._start(r)

    def _stop(self, r: int) -> None:
        pod = self.pods[r]
        self.pods[r] = None
        if pod is None:
            return
        self._replica_of.pop(pod, None)
        with suppress(NotFound):  # already gone (a fault or an eviction got there first)
            self.kube.delete_object("pods", NAMESPACE, pod, grace_seconds=0)

    def _start(self, r: int) -> None:
        self.generation[r] += 1
        home = self.homes[r] if self._home_free(r) else None
        pod = replay_pod(self.name, self.sources[r], r, self.generation[r], home)
        self.pods[r] = pod["metadata"]["name"]
        self._replica_of[pod["metadata"]["name"]] = r
        self.kube.add_pod(pod)

    def _home_free(self, r: int) -> bool:
        """Whether the replica's home GPU can take a pod now: node Ready and uncordoned, GPU healthy and free."""
        node, gpu = self.homes[r]
        try:
            if not (self.kube.node_ready(node) and self.kube.node_schedulable(node) and self.gpu_usable(node, gpu)):
                return False
        except NotFound:  # the node has left the cluster
            return False
        return not any(
            gpu in pod_gpus(p) and p.get("status", {}).get("phase") in ("Pending", "Running")
            for p in self.kube.list_pods(node=node)
        )

    def on_event(self, event: KubeEvent) -> None:
        """A replica's pod stopped without the replay asking (a fault, an eviction): replace it next step."""
        if event.kind == "pod_stopped" and event.namespace == NAMESPACE and event.pod in self._replica_of:
            self.pods[self._replica_of.pop(event.pod)] = None

    def fill(self, t: float, rows: Mapping[str, list[int]], out: Load) -> None:
        """Write the replayed load at time `t` onto the GPU rows the replicas' pods hold now."""
        k = self.column(t)
        if k >= self.grid.load.shape[1]:
            return
        pairs = [(row, r) for r, key in enumerate(self.keys) for row in rows.get(key, ())]
        if not pairs:
            return
        idx, replicas = np.array(pairs, dtype=np.int64).T
        out.load[idx] = self.grid.load[replicas, k]
        out.fb_mib[idx] = self.grid.fb_mib[replicas, k]
        out.tensor_share[idx] = 0.35
        out.dram_share[idx] = 0.6
        out.nvlink_share[idx] = 0.05


def home_gpus(kube: KubeState, nodes: tuple[str, ...], gpus_per_node: int, count: int) -> list[tuple[str, int]]:
    """The first `count` GPUs no pod holds on the nodes in the cluster now, in node then GPU order; ScenarioError
    when there are fewer."""
    held = set(kube.gpu_assignments())
    present = {obj["metadata"]["name"] for obj in kube.list_nodes()}
    free = [(node, gpu) for node in nodes if node in present for gpu in range(gpus_per_node) if (node, gpu) not in held]
    if len(free) < count:
        raise ScenarioError(
            f"replay: the recording has {count} pods, each needing a GPU of its own, but the fleet has "
            f"{len(free)} GPUs free of other workloads; add nodes or remove workloads"
        )
    return free[:count]


def build_replay(
    scenario: Scenario, kube: KubeState, nodes: tuple[str, ...], gpu_usable: Callable[[str, int], bool]
) -> ReplayFleet:
    """The replay of a scenario on a twin whose other workloads are installed: homes assigned, the pods of
    step 0 running, and the controller listening for pods that stop."""
    assert scenario.replay is not None
    recording = load_recording(scenario.replay)
    steps = round(scenario.duration / scenario.step)
    grid = build_grid(recording, scenario.step, steps)
    homes = home_gpus(kube, nodes, scenario.fleet.gpus_per_node, len(recording.pods))
    fleet = ReplayFleet(
        scenario.replay, grid, recording.pods, homes, kube, gpu_usable, (scenario.start, scenario.step)
    )
    kube.subscribe(fleet.on_event)
    fleet.sync(scenario.start)
    return fleet
