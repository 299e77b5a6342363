"""Scenario files: the twin's input (YAML), validated with pydantic.

A scenario names a fleet, a duration and a step, optional workloads, and the faults to inject.
Durations are written like `90s`, `15m`, `6h`, `1d` (or a bare number of seconds); nodes are named
`gpu-node-001`, … and GPUs are indexed from 0. A scenario that does not validate is refused with
a message naming the field and what it expects.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.durations import Duration
from simulator.healthy_spec import BatchWorkload, Healthy, NotebookWorkload, check_fleet_room
from simulator.serving import ServingSpec

FAULT_KINDS: tuple[str, ...] = (
    "xid79",
    "xid48_dbe",
    "ecc_sbe_storm",
    "row_remap_exhaustion",
    "thermal_runaway",
    "nvlink_degradation",
    "gsp_timeout",
    "straggler",
    "hung_job",
    "memory_leak",
    "pcie_replay_storm",
    "node_not_ready",
    "inference_overload",
    "ib_link_down",
    "ib_link_flap",
    "ib_link_degraded",
    "ib_symbol_errors",
    "nic_lost",
)
FaultKind = Literal[
    "xid79",
    "xid48_dbe",
    "ecc_sbe_storm",
    "row_remap_exhaustion",
    "thermal_runaway",
    "nvlink_degradation",
    "gsp_timeout",
    "straggler",
    "hung_job",
    "memory_leak",
    "pcie_replay_storm",
    "node_not_ready",
    "inference_overload",
    "ib_link_down",
    "ib_link_flap",
    "ib_link_degraded",
    "ib_symbol_errors",
    "nic_lost",
]
# Faults that concern a whole node; the others need a GPU index.
NODE_LEVEL_KINDS: frozenset[str] = frozenset({"node_not_ready"})
# Faults of one HCA's link (parameter `hca`, default 0; HCA i carries GPU i's traffic); no gpu index needed.
FABRIC_KINDS: frozenset[str] = frozenset({"ib_link_down", "ib_link_flap", "ib_link_degraded", "ib_symbol_errors",
                                          "nic_lost"})
# The parameters each fault kind reads (besides `lead` and `transient`, which every kind accepts); a
# misspelt parameter is refused rather than silently ignored.
COMMON_FAULT_PARAMS: frozenset[str] = frozenset({"lead", "transient"})
FAULT_PARAMS: dict[str, frozenset[str]] = {
    "ecc_sbe_storm": frozenset({"peak_sbe_per_min"}),
    "row_remap_exhaustion": frozenset({"remaps"}),
    "thermal_runaway": frozenset({"extra_resistance"}),
    "nvlink_degradation": frozenset({"peak_crc_per_s"}),
    "straggler": frozenset({"slowdown", "duration"}),
    "pcie_replay_storm": frozenset({"peak_replays_per_s", "fall_off"}),
    "node_not_ready": frozenset({"duration"}),
    "inference_overload": frozenset({"factor", "duration", "deployment"}),
    "ib_link_down": frozenset({"hca"}),
    "ib_link_flap": frozenset({"hca", "every"}),
    "ib_link_degraded": frozenset({"hca", "rate_gbps"}),
    "ib_symbol_errors": frozenset({"hca", "per_s"}),
    "nic_lost": frozenset({"hca"}),
}
PLANNERS: tuple[str, ...] = ("rules", "llm", "llm_out_of_scope")

GPU_MODELS: dict[str, str] = {"H100 80GB": "NVIDIA H100 80GB HBM3"}
# The names people write for a simulated model: the short one, the product name, dcgm-exporter's modelName.
GPU_MODEL_NAMES: dict[str, str] = {
    **{k.casefold(): k for k in GPU_MODELS}, **{v.casefold(): k for k, v in GPU_MODELS.items()},
    "h100": "H100 80GB", "h100 sxm": "H100 80GB", "h100 sxm5": "H100 80GB", "nvidia h100": "H100 80GB",
    "h100 80gb hbm3": "H100 80GB",
}

_NODE_NAME = re.compile(r"^gpu-node-(\d{3,})$")


class ScenarioError(ValueError):
    """A scenario that cannot run: the message names the field and what it expects."""


def node_name(index: int) -> str:
    """The name of the node at 0-based `index`: gpu-node-001, gpu-node-002, …"""
    return f"gpu-node-{index + 1:03d}"


def node_index(name: str) -> int:
    """The 0-based index of a node name; ValueError for a name not of the form gpu-node-NNN."""
    match = _NODE_NAME.match(name)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"expected a node name like 'gpu-node-001', got {name!r}")
    return int(match.group(1)) - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fleet(_Strict):
    """How many nodes, GPUs per node, and which GPU model."""

    nodes: int = Field(16, ge=1, le=10_000)
    gpus_per_node: int = Field(8, ge=1, le=16)
    gpu_model: str = "H100 80GB"

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _known_model(cls, value: Any) -> str:
        known = GPU_MODEL_NAMES.get(" ".join(str(value).split()).casefold())
        if known is None:
            raise ValueError(f"gpu_model {value!r} is not simulated; expected one of "
                             f"{sorted(GPU_MODELS)} (or 'H100', or dcgm's {sorted(GPU_MODELS.values())})")
        return known

    @property
    def n_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class TrainingWorkload(_Strict):
    """A multi-node training job: one pod per node holding all its GPUs, gang-scheduled."""

    type: Literal["training"]
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    nodes: int = Field(ge=1)
    intensity: float = Field(0.95, gt=0, le=1.0)
    checkpoint_every: Duration = 3600.0
    max_unavailable: int | None = Field(
        None, ge=0, description="a PodDisruptionBudget over the job's pods: at most this many disrupted at once"
    )


class InferenceWorkload(_Strict):
    """An inference deployment: replicas of `gpus_per_replica` GPUs following a diurnal request curve."""

    type: Literal["inference"]
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(ge=0)
    gpus_per_replica: int = Field(1, ge=1)
    peak_load: float = Field(0.8, gt=0, le=1.0)
    trough_load: float = Field(0.25, ge=0, le=1.0)
    peak_hour_utc: float = Field(15.0, ge=0, lt=24)
    max_unavailable: int | None = Field(
        None, ge=0, description="a PodDisruptionBudget over the replicas: at most this many disrupted at once"
    )


Workload = Annotated[
    TrainingWorkload | InferenceWorkload | NotebookWorkload | BatchWorkload, Field(discriminator="type")
]


class FaultSpec(BaseModel):
    """One injected fault: kind, where, when, and kind-specific parameters (kept as extras)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: FaultKind
    node: str
    gpu: int | None = Field(None, ge=0)
    at: Duration

    @model_validator(mode="after")
    def _where(self) -> FaultSpec:
        node_index(self.node)
        if self.gpu is None and self.kind not in NODE_LEVEL_KINDS | FABRIC_KINDS:
            raise ValueError(f"fault kind {self.kind!r} needs a gpu index")
        allowed = COMMON_FAULT_PARAMS | FAULT_PARAMS.get(self.kind, frozenset())
        unknown = sorted(set(self.model_extra or {}) - allowed)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for fault kind {self.kind!r}; "
                             f"expected some of {', '.join(sorted(allowed))}")
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BackgroundFaults(_Strict):
    """Faults drawn at random at published field rates, scaled by `scale` (1.0 = the field rate)."""

    scale: float = Field(1.0, ge=0)


class ReplaySpec(_Strict):
    """Recorded per-pod GPU telemetry to replay as inference replicas (simulator/replay.py): CSV or CSV.gz files
    with columns timestamp_anon, value, container_ip, relative to the scenario file's folder."""

    gpu_duty_cycle: str = Field(min_length=1)
    gpu_memory_used_bytes: str = Field(min_length=1)
    name: str = Field("replay", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40,
                      description="the replicas' owner: pods are named <name>-<template hash>-<5 chars>")


class Scenario(_Strict):
    """A whole scenario file."""

    name: str
    seed: int = 0
    fleet: Fleet = Fleet()
    duration: Duration = 3600.0
    step: Duration = 15.0
    start: float = Field(
        1_767_225_600.0, description="simulated unix time of t=0 (default 2026-01-01T00:00Z)"
    )
    workloads: list[Workload] | None = None
    faults: list[FaultSpec] = []
    background_faults: BackgroundFaults | None = None
    replay: ReplaySpec | None = None
    serving: ServingSpec | None = Field(
        None,
        description="inference Deployments driven by a generated or a replayed request trace (simulator/serving.py)",
    )
    healthy: Healthy | None = Field(
        None, description="a healthy fleet's real mess: workload phases, environment, operations (off when absent)"
    )
    approval: Literal["auto_approve", "auto_reject", "human"] = "human"
    repair_turnaround: Duration | None = Field(
        86400.0, description="in `gpuops eval`, how long after gpuops opens a hardware ticket the technicians "
        "replace the node's faulty GPUs and tell gpuops (next-business-day on-site service, the usual server "
        "support contract: a day); null: nobody repairs anything during the run",
    )
    planner: Literal["rules", "llm", "llm_out_of_scope"] | None = Field(
        None,
        description="who plans remedies in `gpuops eval` when the command names none: the rules table, the "
        "configured LLM, or a scripted LLM that answers every incident with actions outside its scope",
    )

    @model_validator(mode="before")
    @classmethod
    def _trace_duration(cls, data: Any) -> Any:
        """`duration: trace` is the replay's length, which simulator.scenario_files.load_scenario puts in."""
        if not isinstance(data, dict) or data.get("duration") != "trace":
            return data
        replay = data.get("replay")
        if not replay:
            raise ValueError("duration: 'trace' means the length of a replay recording, but there is no "
                             "`replay:` section; give one, or a duration like '6h'")
        if isinstance(replay, dict) and all(isinstance(replay.get(f), str) for f in ReplaySpec.model_fields
                                            if f != "name"):
            raise ValueError("duration: 'trace' is known once the replay files are read: load the scenario "
                             "with simulator.scenario_files.load_scenario, or give a duration like '6h'")
        return {**data, "duration": 1.0}  # the replay section is malformed: let its validation say how

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.step <= 0:
            raise ValueError("step must be a positive duration like '15s'")
        if self.duration < self.step:
            raise ValueError(f"duration ({self.duration:g}s) must be at least one step ({self.step:g}s)")
        for i, fault in enumerate(self.faults):
            where = f"faults[{i}]"
            if node_index(fault.node) >= self.fleet.nodes:
                raise ValueError(
                    f"{where}.node {fault.node!r} is outside the fleet of {self.fleet.nodes} nodes"
                )
            if fault.gpu is not None and fault.gpu >= self.fleet.gpus_per_node:
                raise ValueError(f"{where}.gpu {fault.gpu} is outside 0..{self.fleet.gpus_per_node - 1}")
            if fault.at > self.duration:
                raise ValueError(
                    f"{where}.at ({fault.at:g}s) is after the end of the scenario ({self.duration:g}s)"
                )
        if self.workloads is not None:
            names = [w.name for w in self.workloads]
            if len(set(names)) != len(names):
                raise ValueError("workloads: names must be unique")
            nodes_needed = sum(w.nodes for w in self.workloads if isinstance(w, TrainingWorkload))
            if nodes_needed > self.fleet.nodes:
                raise ValueError(
                    f"workloads: training jobs need {nodes_needed} nodes, the fleet has {self.fleet.nodes}"
                )
            if self.replay is not None and self.replay.name in names:
                raise ValueError(f"replay.name {self.replay.name!r} is also a workload's name; give another")
        if self.healthy is not None:
            training = (
                sum(w.nodes for w in self.workloads if isinstance(w, TrainingWorkload))
                if self.workloads is not None
                else int(self.fleet.nodes * 0.6) if self.fleet.nodes >= 4 else 0
            )
            check_fleet_room(self.healthy, self.fleet.nodes, training, self.duration)
        return self


LineMap = dict[tuple[str | int, ...], int]


def _describe(exc: ValidationError, lines: LineMap | None = None) -> str:
    out = []
    for err in exc.errors():
        path = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
        loc = ".".join(str(p) for p in path)
        line = _line_of(lines, path) if lines else None
        hint = _hint(str(path[-1])) if err["type"] == "extra_forbidden" and path else ""
        out.append(f"  {'' if line is None else f'line {line}: '}{loc or '(scenario)'}: {err['msg']}{hint}")
    return "\n".join(out)


def _field_places(model: type[BaseModel] = Scenario, where: str = "") -> dict[str, list[str]]:
    """Every field name of the scenario's models, with where it sits (`fleet.nodes`, `workloads[].nodes`)."""
    places: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        place = f"{where}{name}"
        places.setdefault(name, []).append(place)
        for inner in _models_in(info.annotation):
            suffix = "[]." if _is_list(info.annotation) else "."
            for key, found in _field_places(inner, place + suffix).items():
                places.setdefault(key, []).extend(p for p in found if p not in places.get(key, []))
    return places


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(_is_list(a) for a in get_args(annotation))


def _hint(key: str) -> str:
    """For a key the scenario does not know: where a field of that name belongs, or the name it looks like."""
    places = _field_places()
    if key in places:
        where = [p if "." in p else "the top level" for p in places[key][:3]]
        return f" ('{key}' belongs at {' or '.join(where)})"
    close = difflib.get_close_matches(key, list(places), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _line_of(lines: LineMap, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest part of `path` the file has (a missing field: the mapping that lacks it)."""
    for end in range(len(path), -1, -1):
        if (line := lines.get(tuple(path[:end]))) is not None:
            return line
    return None


def yaml_lines(text: str) -> LineMap:
    """Where each field and list item of a YAML document starts (1-based lines), keyed by its path."""
    out: LineMap = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                out[(*path, str(key.value))] = key.start_mark.line + 1
                walk_child(value, (*path, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    def walk_child(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        line = out[path]
        walk(node, path)
        out[path] = line  # a field is where its key is written

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def scenario_from_dict(data: Any, source: str = "scenario", lines: LineMap | None = None) -> Scenario:
    """Validate a parsed scenario; ScenarioError naming each bad field (and its line, given `lines`)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source} is not a valid scenario:\n{_describe(exc, lines)}") from exc


def read_scenario_data(path: str | Path) -> Any:
    """The parsed YAML of a scenario file, not yet validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from exc


def default_scenario(
    nodes: int = 16, gpus_per_node: int = 8, seed: int = 0, duration: float = 86400.0, step: float = 15.0
) -> Scenario:
    """A fault-free fleet with the default workload mix, for `gpuops sim` without a scenario file."""
    return Scenario(
        name="default",
        seed=seed,
        fleet=Fleet(nodes=nodes, gpus_per_node=gpus_per_node),
        duration=duration,
        step=step,
    )
