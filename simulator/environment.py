"""The data hall around the GPUs: inlet air by rack and time of day, cooling events, operator power limits.

Racks of consecutive nodes share their inlet air; some racks run warmer. The whole room drifts over
the day. Now and then a rack loses some cooling (a CRAH fan or a blocked tile) and its inlet rises a few
degrees for 10–40 minutes: a healthy facility keeps that inside the GPUs' operating range, so a rise is
held below what would take the rack's hottest GPU, at its power limit, to its max operating temperature.
Operators lower the power limit of some nodes below the board's maximum (`nvidia-smi -pl`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.healthy_spec import Environment
from simulator.physics import FleetPhysics, FloatArray

HEADROOM_C = 4.0  # how far below max operating temperature a healthy rack's hottest GPU stays
RAMP_S = 180.0  # inlet air takes a few minutes to warm up and to recover
WORST_DIURNAL_C = 1.5 + 1.0  # the per-node daily swing physics.py draws, plus its slow random walk


@dataclass
class CoolingEvent:
    """One rack's inlet rising by `rise_c` from `start` to `end` (ramping in and out)."""

    rack: int
    start: float
    end: float
    rise_c: float

    def rise_at(self, t: float) -> float:
        if t <= self.start or t >= self.end + RAMP_S:
            return 0.0
        ramp_in = min(1.0, (t - self.start) / RAMP_S)
        ramp_out = 1.0 if t <= self.end else 1.0 - (t - self.end) / RAMP_S
        return self.rise_c * ramp_in * ramp_out


class FleetEnvironment:
    """Sets the physics' per-node inlet offset and per-GPU power limits from the scenario's environment."""

    def __init__(self, spec: Environment, physics: FleetPhysics, rng: np.random.Generator) -> None:
        self.spec = spec
        self.physics = physics
        self.rng = rng
        self.active = spec != Environment()
        n_nodes = physics.n_nodes
        self.rack_of_node = np.arange(n_nodes) // spec.rack_size
        self.n_racks = int(self.rack_of_node[-1]) + 1
        self._set_power_limits()
        self.rack_offset = self._rack_offsets()
        self.events: list[CoolingEvent] = []

    def _hottest(self, extra_c: FloatArray) -> FloatArray:
        """Per rack: the equilibrium temperature of its hottest GPU at its power limit, at the day's warmest."""
        p = self.physics
        per_gpu = (
            np.repeat(p.node_inlet_base + extra_c, p.gpus_per_node)
            + p.thermal_resistance * p.power_limit
        )
        per_node = per_gpu.reshape(p.n_nodes, p.gpus_per_node).max(axis=1) + WORST_DIURNAL_C
        out = np.full(self.n_racks, -np.inf)
        np.maximum.at(out, self.rack_of_node, per_node)
        return out

    def _rack_offsets(self) -> FloatArray:
        """Rack inlet offsets (some racks warmer), each held within the rack's headroom."""
        spec = self.spec
        offsets = self.rng.normal(0.0, spec.rack_inlet_spread_c, self.n_racks) if spec.rack_inlet_spread_c else (
            np.zeros(self.n_racks)
        )
        room = np.full(self.physics.n_nodes, spec.room_swing_c)
        limit = self.physics.spec.max_operating_temp_c - HEADROOM_C
        headroom = limit - self._hottest(room)
        return np.minimum(offsets, np.maximum(headroom, 0.0))

    def _set_power_limits(self) -> None:
        spec, p = self.spec, self.physics
        if spec.power_capped_share <= 0:
            return
        capped = self.rng.random(p.n_nodes) < spec.power_capped_share
        limits = np.round(self.rng.uniform(*spec.power_cap_w, p.n_nodes) / 25.0) * 25.0
        limits = np.minimum(limits, p.spec.power_limit_w)
        per_node = np.where(capped, limits, p.spec.power_limit_w)
        p.power_limit = np.repeat(per_node, p.gpus_per_node)

    def room_c(self, t: float) -> float:
        """The room-wide daily drift of inlet air (warmest at `room_peak_hour_utc`)."""
        hour = (t % 86400.0) / 3600.0
        return self.spec.room_swing_c * math.cos(2 * math.pi * (hour - self.spec.room_peak_hour_utc) / 24.0)

    def step(self, t: float, dt: float) -> None:
        """Start any cooling event due now and write this step's inlet offsets into the physics."""
        if not self.active:
            return
        self._maybe_start_event(t, dt)
        self.events = [e for e in self.events if t < e.end + RAMP_S]
        cooling = np.zeros(self.n_racks)
        for event in self.events:
            cooling[event.rack] += event.rise_at(t)
        rack = self.rack_offset + cooling
        self.physics.inlet_offset = rack[self.rack_of_node] + self.room_c(t)

    def _maybe_start_event(self, t: float, dt: float) -> None:
        spec = self.spec
        rate = spec.cooling_events_per_day / 86400.0
        if rate <= 0 or self.rng.random() >= 1.0 - math.exp(-rate * dt):
            return
        rack = int(self.rng.integers(0, self.n_racks))
        if any(e.rack == rack for e in self.events):
            return
        extra = self.rack_offset[self.rack_of_node] + spec.room_swing_c
        headroom = self.physics.spec.max_operating_temp_c - HEADROOM_C - self._hottest(extra)[rack]
        rise = min(float(self.rng.uniform(*spec.cooling_rise_c)), float(headroom))
        if rise < 1.0:
            return  # this rack has no margin left: a facility would not let it run so close
        length = float(self.rng.uniform(*spec.cooling_length))
        self.events.append(CoolingEvent(rack, t, t + length, rise))
