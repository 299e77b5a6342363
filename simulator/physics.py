"""Vectorised GPU physics: power, clocks, temperatures and health counters of every GPU at once.

Each step takes the workload's demand per GPU (`Load`) and the faults' influence (`Modifiers`)
and advances one state (`FleetPhysics`): power follows load up to the power limit, clocks follow
load and drop under power capping and thermal slowdown, temperature follows power through a
first-order thermal model (inertia `tau`) above an inlet temperature that drifts per node, and
error counters tick as Poisson processes (healthy GPUs too, at low per-GPU rates).
All arrays are indexed by GPU row: row = node_index * gpus_per_node + gpu.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulator.hardware import GpuModelSpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Healthy single-bit ECC rates vary widely between GPUs: most see none for weeks, a few see
# several a day (Sridharan et al., "Memory Errors in Modern Systems", ASPLOS 2015: a small
# fraction of devices account for most correctable errors). Lognormal per GPU, median one a month.
HEALTHY_SBE_PER_S_MEDIAN = 1.0 / (30 * 86400)
HEALTHY_SBE_SIGMA = 2.0
HEALTHY_PCIE_REPLAY_PER_S_MEDIAN = 1.0 / (7 * 86400)
HEALTHY_NVLINK_CRC_PER_S_MEDIAN = 1.0 / (2 * 86400)
BENIGN_SPIKE_PROBABILITY = 2e-4  # per GPU and sample


@dataclass
class Load:
    """What the workloads ask of each GPU this step."""

    load: FloatArray  # 0..1 share of the GPU's compute in use
    fb_mib: FloatArray  # framebuffer the workload holds
    tensor_share: FloatArray  # share of active cycles in the tensor pipe
    dram_share: FloatArray  # share of active cycles moving device memory
    nvlink_share: FloatArray  # share of NVLink bandwidth in use (collectives)

    @classmethod
    def idle(cls, n: int) -> Load:
        zeros = np.zeros(n)
        return cls(zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy())


@dataclass
class Modifiers:
    """How active faults bend the physics this step; neutral values mean healthy."""

    n: int
    load_scale: FloatArray = field(init=False)
    hung: BoolArray = field(init=False)
    clock_cap_mhz: FloatArray = field(init=False)
    extra_thermal_resistance: FloatArray = field(init=False)
    extra_fb_mib: FloatArray = field(init=False)
    sbe_per_s: FloatArray = field(init=False)
    dbe: IntArray = field(init=False)
    uncorrectable_remaps: IntArray = field(init=False)
    correctable_remaps_per_s: FloatArray = field(init=False)
    crc_flit_per_s: FloatArray = field(init=False)
    crc_data_per_s: FloatArray = field(init=False)
    pcie_replay_per_s: FloatArray = field(init=False)
    nvlink_scale: FloatArray = field(init=False)
    xids: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.n
        self.load_scale = np.ones(n)
        self.hung = np.zeros(n, dtype=bool)
        self.clock_cap_mhz = np.full(n, np.inf)
        self.extra_thermal_resistance = np.zeros(n)
        self.extra_fb_mib = np.zeros(n)
        self.sbe_per_s = np.zeros(n)
        self.dbe = np.zeros(n, dtype=np.int64)
        self.uncorrectable_remaps = np.zeros(n, dtype=np.int64)
        self.correctable_remaps_per_s = np.zeros(n)
        self.crc_flit_per_s = np.zeros(n)
        self.crc_data_per_s = np.zeros(n)
        self.pcie_replay_per_s = np.zeros(n)
        self.nvlink_scale = np.ones(n)


class FleetPhysics:
    """The physical state of every GPU, advanced one step at a time."""

    def __init__(
        self, n_nodes: int, gpus_per_node: int, spec: GpuModelSpec, rng: np.random.Generator
    ) -> None:
        self.spec = spec
        self.n_nodes = n_nodes
        self.gpus_per_node = gpus_per_node
        n = self.n = n_nodes * gpus_per_node
        self._rng = rng
        # Per-GPU constants: slot position and paste quality change thermal resistance, silicon
        # lottery changes power at equal work; each node has its own inlet temperature.
        self.thermal_resistance = spec.thermal_resistance_c_per_w * rng.normal(1.0, 0.06, n).clip(0.8, 1.25)
        self.power_efficiency = rng.normal(1.0, 0.03, n).clip(0.9, 1.1)
        self.node_inlet_base = rng.normal(24.0, 1.5, n_nodes).clip(19.0, 29.0)
        self.node_inlet_phase = rng.uniform(0, 2 * math.pi, n_nodes)
        self.node_inlet_walk = np.zeros(n_nodes)
        # Set by the environment (simulator/environment.py): rack offsets and cooling events per node, and
        # the power limit operators set per GPU (the board's maximum unless lowered).
        self.inlet_offset = np.zeros(n_nodes)
        self.power_limit = np.full(n, spec.power_limit_w)
        self.sbe_rate = HEALTHY_SBE_PER_S_MEDIAN * rng.lognormal(0.0, HEALTHY_SBE_SIGMA, n)
        self.pcie_replay_rate = HEALTHY_PCIE_REPLAY_PER_S_MEDIAN * rng.lognormal(0.0, 1.5, n)
        self.crc_rate = HEALTHY_NVLINK_CRC_PER_S_MEDIAN * rng.lognormal(0.0, 1.5, n)
        # Dynamic state.
        inlet = np.repeat(self.node_inlet_base, gpus_per_node)
        self.temp = inlet + self.thermal_resistance * spec.idle_power_w
        self.mem_temp = self.temp + 3.0
        self.power = np.full(n, spec.idle_power_w)
        self.sm_clock = np.full(n, spec.idle_sm_clock_mhz)
        self.util = np.zeros(n)
        self.gr_active = np.zeros(n)
        self.tensor_active = np.zeros(n)
        self.dram_active = np.zeros(n)
        self.fb_used = np.zeros(n)
        self.pcie_tx = np.zeros(n)
        self.pcie_rx = np.zeros(n)
        self.energy_mj = rng.uniform(1e9, 5e10, n).round()
        self.sbe = np.zeros(n)
        self.dbe = np.zeros(n)
        self.uncorrectable_remaps = np.zeros(n)
        self.correctable_remaps = np.zeros(n)
        self.row_remap_failure = np.zeros(n)
        self.crc_flit = np.zeros(n)
        self.crc_data = np.zeros(n)
        self.pcie_replay = np.zeros(n)
        self.nvlink_bandwidth_kib = np.zeros(n)
        self.power_violation_us = np.zeros(n)
        self.thermal_violation_us = np.zeros(n)
        self.last_xid = np.zeros(n)
        # What the exporter reads this step: the state plus sensor noise and rare benign spikes.
        self.reading_temp = self.temp.round()
        self.reading_mem_temp = self.mem_temp.round()
        self.reading_power = self.power.copy()

    def inlet(self, t: float, dt: float) -> FloatArray:
        """Per-node inlet temperature: base + diurnal swing + a slow random walk (ambient drift)."""
        day = 2 * math.pi * (t % 86400.0) / 86400.0
        self.node_inlet_walk += self._rng.normal(0.0, 0.02 * math.sqrt(dt), self.n_nodes)
        self.node_inlet_walk *= math.exp(-dt / 7200.0)
        node = self.node_inlet_base + 1.5 * np.sin(day + self.node_inlet_phase) + self.node_inlet_walk
        node = node + self.inlet_offset
        return np.repeat(node, self.gpus_per_node)

    def step(self, t: float, dt: float, demand: Load, mods: Modifiers) -> None:
        """Advance every GPU by `dt` seconds to simulated time `t`."""
        spec, rng, n = self.spec, self._rng, self.n
        load = np.clip(demand.load * mods.load_scale, 0.0, 1.0)
        busy = load > 0.01
        # Power demand grows sub-linearly with load; capped at the power limit, clocks drop
        # roughly with the square root of the cap (dynamic power ~ f·V², V tracking f).
        want = (
            spec.idle_power_w + (spec.power_limit_w - spec.idle_power_w) * load**0.85 * self.power_efficiency
        )
        hung = mods.hung
        want = np.where(hung, spec.idle_power_w * 1.6, want)
        cap_ratio = np.minimum(1.0, self.power_limit / want)
        clock = np.where(busy | hung, spec.max_sm_clock_mhz * np.sqrt(cap_ratio), spec.idle_sm_clock_mhz)
        power = np.minimum(want, self.power_limit)
        # Thermal slowdown between max operating and shutdown temperature.
        slow = np.clip(
            (self.temp - spec.max_operating_temp_c) / (spec.shutdown_temp_c - spec.max_operating_temp_c),
            0.0,
            1.0,
        )
        self.thermal_violation_us += np.where(slow > 0, dt * 1e6, 0.0)
        clock = clock * (1.0 - 0.55 * slow)
        capped = np.minimum(clock, mods.clock_cap_mhz)
        clock_ratio = np.where(busy, capped / np.maximum(clock, 1.0), 1.0)
        clock = capped
        throttle = (1.0 - 0.55 * slow) * clock_ratio
        # The power limit throttles only a GPU nothing else holds slower: one held back by heat or by a fault's
        # clock cap draws less than its limit, and the driver reports that slowdown, not a power cap.
        self.power_violation_us += np.where((cap_ratio < 0.999) & (throttle >= 0.999), dt * 1e6, 0.0)
        # A clock a fault holds lower draws dynamic power as the square of the clock ratio: the same f·V², V
        # tracking f, relation that sets the clock under a power cap above (P = C·V²·f for CMOS switching power).
        # The thermal slowdown's factor stays as it is: it stands for the throttled power as a whole.
        power = spec.idle_power_w + (power - spec.idle_power_w) * (1.0 - 0.55 * slow) * clock_ratio**2
        self.power = power
        self.sm_clock = np.round(clock / 15.0) * 15.0
        # Thermal inertia: first-order approach to the equilibrium for this power.
        inlet = self.inlet(t, dt)
        r_th = self.thermal_resistance + mods.extra_thermal_resistance
        alpha = 1.0 - math.exp(-dt / spec.thermal_tau_s)
        self.temp += (inlet + r_th * power - self.temp) * alpha
        hbm_eq = inlet + r_th * power + spec.hbm_offset_c_per_w * power * (0.5 + demand.dram_share)
        self.mem_temp += (hbm_eq - self.mem_temp) * alpha
        # Utilisation and profiling ratios.
        work = load * throttle
        self.util = np.where(
            hung, 100.0, np.where(busy, np.clip(load * 100.0 + rng.normal(0, 1.2, n), 1, 100), 0.0)
        )
        self.gr_active = np.where(hung, 0.99, np.clip(work * 0.97 + rng.normal(0, 0.008, n) * busy, 0, 1))
        self.tensor_active = np.where(hung, 0.0, np.clip(work * demand.tensor_share, 0, 1))
        self.dram_active = np.where(hung, 0.0, np.clip(work * demand.dram_share, 0, 1))
        self.fb_used = np.minimum(demand.fb_mib + mods.extra_fb_mib, spec.fb_total_mib - spec.fb_reserved_mib)
        pcie_rate = spec.pcie_gen5_bytes_per_s * 0.02 * work
        self.pcie_tx = pcie_rate * rng.uniform(0.8, 1.2, n)
        self.pcie_rx = pcie_rate * rng.uniform(0.8, 1.2, n)
        self.energy_mj += power * dt * 1000.0
        nvlink_gbps = 450.0 * demand.nvlink_share * work * mods.nvlink_scale
        self.nvlink_bandwidth_kib += nvlink_gbps * 1e9 / 1024.0 * dt
        self._tick_counters(dt, mods)
        self._read_sensors()

    def _tick_counters(self, dt: float, mods: Modifiers) -> None:
        rng = self._rng
        self.sbe += rng.poisson((self.sbe_rate + mods.sbe_per_s) * dt)
        self.dbe += mods.dbe
        self.uncorrectable_remaps += mods.uncorrectable_remaps
        self.correctable_remaps += rng.poisson(mods.correctable_remaps_per_s * dt)
        self.crc_flit += rng.poisson((self.crc_rate + mods.crc_flit_per_s) * dt)
        self.crc_data += rng.poisson(mods.crc_data_per_s * dt)
        self.pcie_replay += rng.poisson((self.pcie_replay_rate + mods.pcie_replay_per_s) * dt)
        for row, code in mods.xids:
            self.last_xid[row] = code

    def _read_sensors(self) -> None:
        rng, n = self._rng, self.n
        spike = rng.random(n) < BENIGN_SPIKE_PROBABILITY
        self.reading_temp = np.round(self.temp + rng.normal(0, 0.35, n) + spike * rng.uniform(2, 5, n))
        self.reading_mem_temp = np.round(self.mem_temp + rng.normal(0, 0.35, n))
        noise = rng.normal(1.0, 0.012, n)
        spike_w = np.where(rng.random(n) < BENIGN_SPIKE_PROBABILITY, rng.uniform(60, 180, n), 0.0)
        self.reading_power = np.round(np.maximum(self.power * noise + spike_w, 20.0), 3)

    def reset_gpu(self, row: int) -> None:
        """What a GPU reset or reboot does to the counters: volatile ECC counts and last XID clear."""
        self.sbe[row] = 0
        self.dbe[row] = 0
        self.last_xid[row] = 0

    def replace_gpu(self, row: int) -> None:
        """A new board in the slot: every health counter starts from zero."""
        self.reset_gpu(row)
        for arr in (
            self.uncorrectable_remaps,
            self.correctable_remaps,
            self.row_remap_failure,
            self.crc_flit,
            self.crc_data,
            self.pcie_replay,
        ):
            arr[row] = 0
