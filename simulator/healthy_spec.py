"""Scenario fields for a healthy fleet as messy as a real one: the `healthy:` block and two workload types.

Everything defaults to off: a scenario without `healthy:` runs exactly as before. Ranges are written as
two-element lists `[low, high]`; durations like `90s`, `15m`, `6h`. Unknown fields are refused, naming
the field, like every other part of a scenario.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from simulator.durations import parse_duration


def _seconds(value: Any) -> float:
    return parse_duration(value)


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {list(value)}")
    return value


_Seconds = Annotated[float, BeforeValidator(_seconds)]
DurationRange = Annotated[tuple[_Seconds, _Seconds], AfterValidator(_ordered)]
FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotebookWorkload(_Strict):
    """Interactive notebooks: one pod per user holding 1 GPU, idle for hours with memory held, bursting now
    and then."""

    type: Literal["notebook"]
    name: str = Field(pattern=_NAME)
    users: int = Field(ge=0)
    bursts_per_day: float = Field(3.0, ge=0, description="bursts of work per notebook and day")
    burst_length: DurationRange = (300.0, 2700.0)
    burst_load: FloatRange = (0.3, 0.9)
    memory_gib: FloatRange = (6.0, 40.0)


class BatchWorkload(_Strict):
    """A batch inference run: `pods` pods of `gpus_per_pod` GPUs at steady high load from `at` for `length`."""

    type: Literal["batch"]
    name: str = Field(pattern=_NAME)
    pods: int = Field(ge=1)
    gpus_per_pod: int = Field(1, ge=1, le=16)
    at: _Seconds = 0.0
    length: _Seconds = 7200.0
    load: float = Field(0.92, gt=0, le=1.0)


class TrainingBehaviour(_Strict):
    """What healthy training does besides computing: checkpoints, evaluation, loader stalls, churn."""

    checkpoint_stall: DurationRange | None = Field(
        None, description="every rank stalls this long at each checkpoint, memory held (off: a 90 s dip)"
    )
    eval_every: _Seconds | None = Field(None, gt=0)
    eval_length: DurationRange = (300.0, 1200.0)
    eval_load: float = Field(0.45, gt=0, le=1.0, description="load during evaluation, as a share of training's")
    loader_stalls_per_hour: float = Field(0.0, ge=0)
    loader_stall_length: DurationRange = (5.0, 60.0)
    jobs_per_day: float = Field(0.0, ge=0, description="new training jobs submitted per day")
    job_length: DurationRange = (6 * 3600.0, 3 * 86400.0)
    job_nodes: IntRange = (1, 8)
    resize_share: float = Field(0.0, ge=0, le=1, description="share of job ends that relaunch at another size")


class InferenceBehaviour(_Strict):
    """Online inference's weekly shape and bursts (the daily curve is the workload's own)."""

    weekend_factor: float = Field(1.0, gt=0, le=1.0, description="Saturday and Sunday load as a share of weekdays")
    bursts_per_day: float = Field(0.0, ge=0, description="bursts per deployment and day")
    burst_factor: FloatRange = (1.3, 2.0)
    burst_length: DurationRange = (120.0, 900.0)


class Environment(_Strict):
    """Inlet temperature by rack and time of day, cooling events, operator power limits."""

    rack_size: int = Field(4, ge=1, description="consecutive nodes sharing a rack's inlet air")
    rack_inlet_spread_c: float = Field(0.0, ge=0, le=5, description="spread (sd) of rack inlet offsets")
    room_swing_c: float = Field(0.0, ge=0, le=6, description="room-wide daily inlet swing (peak to mean)")
    room_peak_hour_utc: float = Field(15.0, ge=0, lt=24)
    cooling_events_per_day: float = Field(0.0, ge=0, description="racks losing some cooling, fleet-wide per day")
    cooling_rise_c: FloatRange = (3.0, 8.0)
    cooling_length: DurationRange = (600.0, 2400.0)
    power_capped_share: float = Field(0.0, ge=0, le=1, description="share of nodes given a lower power limit")
    power_cap_w: FloatRange = (500.0, 600.0)


class DriverUpgrade(_Strict):
    """A rolling driver upgrade: one node at a time is cordoned, drained, rebooted and uncordoned."""

    at: _Seconds
    version: str = Field("550.144.03", pattern=r"^\d+\.\d+(\.\d+)?$")
    every: _Seconds = Field(1800.0, gt=0, description="time between nodes starting their upgrade")
    nodes: int | None = Field(None, ge=1, description="how many nodes (default: all)")
    reboot: DurationRange = (180.0, 480.0)


class NodesAdded(_Strict):
    """The last nodes of the fleet join at `at` (they are absent before)."""

    at: _Seconds
    count: int = Field(ge=1)


class Operations(_Strict):
    """What operators and the monitoring stack do to a healthy fleet."""

    scrape_gaps_per_node_day: float = Field(0.0, ge=0)
    scrape_gap_samples: IntRange = (1, 4)
    exporter_restarts_per_node_day: float = Field(0.0, ge=0)
    human_cordons_per_day: float = Field(0.0, ge=0)
    human_cordon_length: DurationRange = (3600.0, 8 * 3600.0)
    driver_upgrade: DriverUpgrade | None = None
    nodes_added: list[NodesAdded] = []


class Healthy(_Strict):
    """The `healthy:` block of a scenario: every part off unless asked for."""

    training: TrainingBehaviour = TrainingBehaviour()
    inference: InferenceBehaviour = InferenceBehaviour()
    environment: Environment = Environment()
    operations: Operations = Operations()


__all__ = [
    "BatchWorkload",
    "DriverUpgrade",
    "Environment",
    "Healthy",
    "InferenceBehaviour",
    "NodesAdded",
    "NotebookWorkload",
    "Operations",
    "TrainingBehaviour",
    "check_fleet_room",
]


def check_fleet_room(healthy: Healthy, nodes: int, training_nodes: int, duration: float) -> None:
    """Nodes that join later are the fleet's last ones: refuse a scenario whose first training jobs need them,
    or whose nodes would join after its end."""
    late = [added.at for added in healthy.operations.nodes_added if added.at >= duration]
    if late:
        raise ValueError(f"healthy.operations.nodes_added: a node joining at {late[0]:g}s is after the end of the "
                         f"scenario ({duration:g}s)")
    joining = sum(added.count for added in healthy.operations.nodes_added)
    if joining and joining + training_nodes > nodes:
        raise ValueError(
            f"healthy.operations.nodes_added: {joining} nodes join later, but the fleet has {nodes} and its "
            f"training jobs start on {training_nodes}; add nodes to the fleet or join fewer"
        )
