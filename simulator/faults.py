"""Injected faults: each kind's precursor, failure, what clears it, and its ground truth.

Shapes and rates are drawn per fault from the scenario's seed (lead times, peak error rates,
slowdowns), so that no single threshold separates every fault from healthy noise.

Field data the defaults rest on:
- Dubey et al., "The Llama 3 Herd of Models" (Meta, 2024), section 3.3.4 and table 5: 419
  unexpected interruptions in 54 days of pre-training on 16,384 H100 GPUs; 58.7% GPU-related:
  faulty GPU 30.1%, GPU HBM3 memory 17.2%, software bug 12.9%, network switch/cable 8.4%,
  host maintenance 7.6%, GPU SRAM memory 4.5%, GPU system processor 4.1%, NIC 1.7%,
  NCCL watchdog timeouts 1.7%, silent data corruption 1.4%, GPU thermal interface/sensor 1.4%,
  safety/other 1.0–1.5%.
- NVIDIA XID catalogue (docs.nvidia.com/deploy/xid-errors): 48 double-bit ECC error, 63 ECC page
  retirement or row remapping recording event, 64 failure to record a row remap, 74 NVLink error,
  79 GPU has fallen off the bus, 119 GSP RPC timeout.
- NVIDIA A100/H100 row remapping (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt): each bank has
  a few spare rows (8 per bank on A100/H100); a remap failure once a bank's spares are spent. An
  uncorrectable error marks its row for remapping, which takes effect at the next GPU reset; the
  recovery action is that reset, after which the GPU serves again ("Error Recovery and Response Flags").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from simulator.durations import parse_duration
from simulator.fabric import ACTIVE, DISABLED, DOWN, LINK_UP, NDR_GBPS, POLLING, Fabric
from simulator.physics import FleetPhysics, Modifiers
from simulator.scenario import NODE_LEVEL_KINDS, FaultSpec, Scenario, node_name

XID_DBE = 48
XID_ROW_REMAP_EVENT = 63
XID_ROW_REMAP_FAILURE = 64
XID_NVLINK = 74
XID_FALLEN_OFF_BUS = 79
XID_GSP_TIMEOUT = 119

# Faults of the board itself: a reset or reboot does not clear them, only a replacement.
HARDWARE_KINDS: frozenset[str] = frozenset(
    {
        "xid79",
        "xid48_dbe",
        "ecc_sbe_storm",
        "row_remap_exhaustion",
        "thermal_runaway",
        "nvlink_degradation",
        "pcie_replay_storm",
        "ib_link_down",
        "ib_link_flap",
        "ib_link_degraded",
        "ib_symbol_errors",
        "nic_lost",
    }
)
FORECASTABLE_KINDS: frozenset[str] = frozenset(
    {
        "ecc_sbe_storm",
        "row_remap_exhaustion",
        "thermal_runaway",
        "nvlink_degradation",
        "memory_leak",
    }
)

# Interruptions per GPU-second in the Llama 3 run, and the kinds each cause maps to here.
LLAMA3_INTERRUPTIONS_PER_GPU_S = 419 / (54 * 86400 * 16384)
FIELD_MIX: tuple[tuple[str, float], ...] = (
    ("xid79", 0.301 * 0.5),
    ("xid48_dbe", 0.301 * 0.2),
    ("straggler", 0.301 * 0.1),
    ("hung_job", 0.301 * 0.2 + 0.017),
    ("ecc_sbe_storm", 0.172 * 0.6),
    ("row_remap_exhaustion", 0.172 * 0.4 + 0.045),
    ("nvlink_degradation", 0.084),
    ("node_not_ready", 0.076 + 0.017),
    ("gsp_timeout", 0.041),
    ("thermal_runaway", 0.014),
    ("pcie_replay_storm", 0.014),
    ("memory_leak", 0.129),
)


class FaultHost(Protocol):
    """What a fault may touch in the twin."""

    physics: FleetPhysics
    gpus_per_node: int

    def fail_pods_on(self, row: int, reason: str) -> list[str]: ...
    def set_present(self, row: int, present: bool) -> None: ...
    def set_node_ready(self, node: str, ready: bool, reason: str) -> None: ...
    def workload_rows(self, row: int) -> list[int]: ...
    def lockstep_rows(self, row: int) -> list[int]: ...
    def workload_of(self, row: int) -> str | None: ...
    def pods_on(self, row: int) -> list[str]: ...
    def set_overload(self, workload: str, factor: float) -> None: ...
    def demand_peak(self, workload: str) -> float: ...


@dataclass
class FaultTruth:
    """The ground truth of one fault, as written to the truth file."""

    kind: str
    node: str
    gpu: int | None
    onset: float
    failure_at: float | None
    forecastable: bool
    hardware: bool
    params: dict[str, Any]
    cleared_at: float | None = None
    hurts_work: bool = True  # False: the fault never touches the work on its GPU (only its counters move)

    def to_json(self, start: float) -> dict[str, Any]:
        def iso(ts: float | None) -> str | None:
            return iso_utc(ts) if ts is not None else None

        return {
            "kind": self.kind,
            "node": self.node,
            "gpu": self.gpu,
            "onset": iso(self.onset),
            "failure_at": iso(self.failure_at),
            "onset_s": self.onset - start,
            "failure_s": None if self.failure_at is None else self.failure_at - start,
            "forecastable": self.forecastable,
            "hardware": self.hardware,
            "cleared_at": iso(self.cleared_at),
            "params": self.params,
            "hurts_work": self.hurts_work,
        }


def iso_utc(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with a trailing Z."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def _lognormal(rng: np.random.Generator, median: float, sigma: float, low: float, high: float) -> float:
    return float(np.clip(median * math.exp(rng.normal(0.0, sigma)), low, high))


def _param_seconds(params: dict[str, Any], name: str, default: float) -> float:
    if name not in params:
        return default
    try:
        return parse_duration(params[name])
    except ValueError as exc:
        raise ValueError(f"fault parameter {name}: {exc}") from exc


def _param_float(params: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
        raise ValueError(f"fault parameter {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class ActiveFault:
    """One fault's life in the twin: waits for its onset, bends the physics, fails, maybe clears."""

    lead_median_s = 0.0

    def __init__(self, spec: FaultSpec, t0: float, row: int | None, rng: np.random.Generator) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.row = row
        self.rng = rng
        self.onset = t0 + spec.at
        self.params = spec.params
        self.lead = self.draw_lead()
        self.failed_at: float | None = None
        self.cleared_at: float | None = None
        self.truth_params: dict[str, Any] = {}

    def draw_lead(self) -> float:
        if self.lead_median_s <= 0:
            return 0.0
        default = _lognormal(
            self.rng, self.lead_median_s, 0.6, self.lead_median_s / 6, self.lead_median_s * 4
        )
        return _param_seconds(self.params, "lead", default)

    @property
    def failure_time(self) -> float:
        return self.onset + self.lead

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def progress(self, t: float) -> float:
        """0 at onset, 1 at the failure time."""
        return 1.0 if self.lead <= 0 else min(1.0, max(0.0, (t - self.onset) / self.lead))

    def step(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if not self.active or t < self.onset:
            return
        if self.failed_at is None and t >= self.failure_time:
            self.failed_at = t
            self.fail(t, mods, host)
        self.shape(t, dt, mods, host)

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        """The fault's influence on this step (precursor before failure, aftermath after)."""

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        """What happens at the failure time."""

    def on_reset(self, t: float, host: FaultHost) -> None:
        """A GPU reset of this fault's GPU: transient faults clear, hardware ones stay."""
        if not self.hardware and t >= self.onset:
            self.clear(t, host)

    def on_reboot(self, t: float, host: FaultHost) -> None:
        self.on_reset(t, host)

    def disables_gpu(self, t: float) -> bool:
        """Whether the device plugin still reports this fault's GPU unhealthy after a reset or a reboot: a
        hardware fault under way keeps its GPU out until the part is replaced."""
        return self.hardware and self.active and self.onset <= t

    def on_pod_stopped(self, t: float, pod: str, host: FaultHost) -> None:
        """A pod stopped somewhere (the fault may belong to it)."""

    def clear(self, t: float, host: FaultHost) -> None:
        self.cleared_at = t

    def truth(self, node: str) -> FaultTruth:
        failure = (
            self.failed_at
            if self.failed_at is not None
            else (self.failure_time if self.predictable_failure else None)
        )
        params = {**self.params, **self.truth_params}
        if self.lead > 0:
            params.setdefault("lead_s", round(self.lead, 1))
        return FaultTruth(
            kind=self.kind,
            node=node,
            gpu=self.spec.gpu,
            onset=self.onset,
            failure_at=failure,
            forecastable=self.forecastable,
            hardware=self.hardware,
            params=params,
            cleared_at=self.cleared_at,
            hurts_work=self.hurts_work,
        )

    @property
    def forecastable(self) -> bool:
        return self.kind in FORECASTABLE_KINDS

    @property
    def hardware(self) -> bool:
        return self.kind in HARDWARE_KINDS and not bool(self.params.get("transient", False))

    @property
    def predictable_failure(self) -> bool:
        """Whether the failure time is fixed in advance (else it is known once observed)."""
        return True

    @property
    def hurts_work(self) -> bool:
        """Whether the fault ever slows or stops the work on its GPU (or node)."""
        return True


def _gpu_row(fault: ActiveFault) -> int:
    if fault.row is None:
        raise RuntimeError(f"fault {fault.kind} needs a GPU row")
    return fault.row


class EccSbeStorm(ActiveFault):
    """Single-bit errors climb over hours (×1000), then a double-bit error: XID 48, the job dies."""

    lead_median_s = 3 * 3600.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.peak_per_s = (
            _param_float(
                self.params, "peak_sbe_per_min", _lognormal(self.rng, 20.0, 1.0, 2.0, 400.0), 0.01, 1e5
            )
            / 60.0
        )
        self.truth_params["peak_sbe_per_min"] = round(self.peak_per_s * 60, 2)

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.sbe_per_s[row] += self.peak_per_s * 1000.0 ** (self.progress(t) - 1.0)
        mods.correctable_remaps_per_s[row] += self.peak_per_s * 1e-3 * self.progress(t)

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.dbe[row] += 1 + int(self.rng.integers(0, 3))
        mods.uncorrectable_remaps[row] += 1
        mods.xids.append((row, XID_DBE))
        host.fail_pods_on(row, "GPU double-bit ECC error (XID 48)")


class Xid48Dbe(ActiveFault):
    """An abrupt double-bit ECC error (XID 48) with no precursor; recurs every few hours after."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.next_recurrence = self.onset + _lognormal(self.rng, 4 * 3600.0, 0.7, 1800.0, 86400.0)

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.dbe[row] += 1
        mods.uncorrectable_remaps[row] += 1
        mods.xids.append((row, XID_DBE))
        host.fail_pods_on(row, "GPU double-bit ECC error (XID 48)")

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if t >= self.next_recurrence:
            self.next_recurrence = t + _lognormal(self.rng, 4 * 3600.0, 0.7, 1800.0, 86400.0)
            self.fail(t, mods, host)

    def disables_gpu(self, t: float) -> bool:
        """A reset brings the GPU back: its failing row was marked for remapping, and the remap takes effect at
        the reset (see the module's sources). The weak part stays and recurs; a remap that fails is
        RowRemapExhaustion's XID 64."""
        return False


class RowRemapExhaustion(ActiveFault):
    """Uncorrectable errors get their rows remapped (XID 63) faster and faster until a bank has no
    spare row left: ROW_REMAP_FAILURE and XID 64."""

    lead_median_s = 6 * 3600.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        count = int(_param_float(self.params, "remaps", float(self.rng.integers(3, 9)), 1, 64))
        # Events bunch up towards the failure (Beta(3,1) positions over the lead).
        self.event_times = (self.onset + self.lead * np.sort(self.rng.beta(3.0, 1.0, count))).tolist()
        self.truth_params["remaps"] = count

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        while self.event_times and self.event_times[0] <= t:
            self.event_times.pop(0)
            mods.uncorrectable_remaps[row] += 1
            mods.xids.append((row, XID_ROW_REMAP_EVENT))
        mods.sbe_per_s[row] += 0.02 * self.progress(t)

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        host.physics.row_remap_failure[row] = 1
        mods.xids.append((row, XID_ROW_REMAP_FAILURE))
        host.fail_pods_on(row, "GPU row remapping failure (XID 64)")


class ThermalRunaway(ActiveFault):
    """Cooling loss: thermal resistance climbs over tens of minutes; under load the GPU heats,
    throttles past its max operating temperature, and shuts down at the shutdown temperature."""

    lead_median_s = 40 * 60.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.extra_r = _param_float(
            self.params, "extra_resistance", float(self.rng.uniform(0.15, 0.35)), 0.0, 2.0
        )
        self.truth_params["extra_resistance"] = round(self.extra_r, 3)

    @property
    def predictable_failure(self) -> bool:
        return False

    def step(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if not self.active or t < self.onset:
            return
        row = _gpu_row(self)
        mods.extra_thermal_resistance[row] += self.extra_r * self.progress(t)
        if self.failed_at is None and host.physics.temp[row] >= host.physics.spec.shutdown_temp_c:
            self.failed_at = t
            host.fail_pods_on(row, "GPU thermal shutdown")
            host.set_present(row, False)


class NvlinkDegradation(ActiveFault):
    """NVLink CRC errors rise (×1000) and bandwidth sags, then the link fails: XID 74, the job dies."""

    lead_median_s = 2 * 3600.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.peak_per_s = _param_float(
            self.params, "peak_crc_per_s", _lognormal(self.rng, 20.0, 1.0, 1.0, 500.0), 0.01, 1e6
        )
        self.truth_params["peak_crc_per_s"] = round(self.peak_per_s, 2)

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row, p = _gpu_row(self), self.progress(t)
        rate = self.peak_per_s * 1000.0 ** (p - 1.0)
        mods.crc_flit_per_s[row] += rate
        mods.crc_data_per_s[row] += rate * 0.1
        mods.nvlink_scale[row] *= 1.0 - 0.3 * p**2 if self.failed_at is None else 0.0
        if self.failed_at is None:
            for peer in host.lockstep_rows(row):
                mods.load_scale[peer] *= 1.0 - 0.1 * p**2

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.xids.append((row, XID_NVLINK))
        host.fail_pods_on(row, "NVLink error (XID 74)")


class MemoryLeak(ActiveFault):
    """The pod on the GPU leaks framebuffer until it is full; then the pod dies (out of memory)."""

    lead_median_s = 90 * 60.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pod: str | None = None

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        if self.pod is None:
            pods = host.pods_on(row)
            if "pod" not in self.truth_params:  # a GPU running nothing leaks nothing: the truth says so
                self.truth_params["pod"] = pods[0] if pods else ""
            if not pods:
                return
            self.pod = pods[0]
            if not self.truth_params["pod"]:  # a pod placed on the GPU later leaks from then on
                self.truth_params.update(met_by=self.pod, met_at=iso_utc(t))
        spec = host.physics.spec
        room = spec.fb_total_mib - spec.fb_reserved_mib
        mods.extra_fb_mib[row] += room * self.progress(t) ** 1.3

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        if self.pod is None:
            self.failed_at = None
            self.lead = t - self.onset + 60.0  # nothing to fill yet: try again when a pod arrives
            return
        host.fail_pods_on(_gpu_row(self), "CUDA out of memory")
        self.cleared_at = t

    def on_pod_stopped(self, t: float, pod: str, host: FaultHost) -> None:
        if pod == self.pod and self.cleared_at is None:
            self.cleared_at = t


class Xid79(ActiveFault):
    """The GPU falls off the bus (XID 79): its series vanish and its pods die."""

    @property
    def transient(self) -> bool:
        return bool(self.params.get("transient", False))

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        host.physics.last_xid[row] = XID_FALLEN_OFF_BUS
        host.fail_pods_on(row, "GPU has fallen off the bus (XID 79)")
        host.set_present(row, False)

    def on_reset(self, t: float, host: FaultHost) -> None:
        """A fallen GPU cannot be reset; only a reboot may bring a transient one back."""

    def on_reboot(self, t: float, host: FaultHost) -> None:
        if self.transient and t >= self.onset:
            host.set_present(_gpu_row(self), True)
            self.clear(t, host)


class GspTimeout(ActiveFault):
    """The GPU system processor stops answering (XID 119): the job dies, the GPU is unusable
    until a reset."""

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.xids.append((row, XID_GSP_TIMEOUT))
        host.fail_pods_on(row, "GSP RPC timeout (XID 119)")

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        mods.load_scale[_gpu_row(self)] = 0.0


class Straggler(ActiveFault):
    """One GPU of a job runs slow (clocks held low); its peers wait at every collective."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slowdown = _param_float(self.params, "slowdown", float(self.rng.uniform(0.55, 0.85)), 0.05, 1.0)
        self.duration = _param_seconds(self.params, "duration", math.inf)
        self.truth_params["slowdown"] = round(self.slowdown, 3)

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if t >= self.onset + self.duration:
            self.clear(t, host)
            return
        row = _gpu_row(self)
        if "workload" not in self.truth_params:  # a GPU running nothing slows nobody: the truth says so
            self.truth_params["workload"] = host.workload_of(row) or ""
        elif not self.truth_params["workload"] and "met_at" not in self.truth_params and host.workload_of(row):
            # a job placed on the slow GPU later (a restart, a pod moved there) is slowed from then on
            self.truth_params.update(met_by=host.workload_of(row), met_at=iso_utc(t))
        mods.clock_cap_mhz[row] = min(
            mods.clock_cap_mhz[row], host.physics.spec.max_sm_clock_mhz * self.slowdown
        )
        for peer in host.lockstep_rows(row):  # a job's ranks wait for it; another replica does not
            if peer != row:
                mods.load_scale[peer] *= 0.35 + 0.65 * self.slowdown


class HungJob(ActiveFault):
    """A job's collective hangs: its GPUs show 100% utilisation at near-idle power, no tensor work. On a
    Deployment's replica the replica hangs (its pod's GPUs), not the Deployment: replicas serve apart."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.workload: str | None = None
        self.pods: set[str] = set()

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        if self.workload is None:
            self.workload = host.workload_of(row) or ""
            self.truth_params["workload"] = self.workload
        rows = host.lockstep_rows(row) if self.workload else [row]  # a job's collective; a replica alone
        if not self.pods:
            self.pods = {p for r in rows for p in host.pods_on(r)}
        for r in rows:
            mods.hung[r] = True

    def on_pod_stopped(self, t: float, pod: str, host: FaultHost) -> None:
        if pod in self.pods and self.active and t >= self.onset:
            self.clear(t, host)


class PcieReplayStorm(ActiveFault):
    """PCIe replays climb (a marginal link); with `fall_off: true` the GPU then falls off the bus."""

    lead_median_s = 60 * 60.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.peak_per_s = _param_float(
            self.params, "peak_replays_per_s", _lognormal(self.rng, 3.0, 1.0, 0.2, 50.0), 0.01, 1e5
        )
        self.fall_off = bool(self.params.get("fall_off", False))
        self.truth_params["peak_replays_per_s"] = round(self.peak_per_s, 2)

    @property
    def forecastable(self) -> bool:
        return self.fall_off

    @property
    def failure_time(self) -> float:
        """A storm that does not end with the GPU off the bus never fails: the replays only cost the link a
        retransmission each (microseconds), so the work on the GPU goes on at its pace."""
        return self.onset + self.lead if self.fall_off else math.inf

    @property
    def predictable_failure(self) -> bool:
        return self.fall_off

    @property
    def hurts_work(self) -> bool:
        return self.fall_off

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        row = _gpu_row(self)
        mods.pcie_replay_per_s[row] += self.peak_per_s * 300.0 ** (self.progress(t) - 1.0)

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        if self.fall_off:
            row = _gpu_row(self)
            host.physics.last_xid[row] = XID_FALLEN_OFF_BUS
            host.fail_pods_on(row, "GPU has fallen off the bus (XID 79)")
            host.set_present(row, False)


class NodeNotReady(ActiveFault):
    """The kubelet stops reporting: the node turns NotReady and its exporter goes silent."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.duration = _param_seconds(self.params, "duration", math.inf)
        self.node = self.spec.node

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        host.set_node_ready(self.node, False, "KubeletNotReady")

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if t >= self.onset + self.duration:
            host.set_node_ready(self.node, True, "KubeletReady")
            self.clear(t, host)

    def on_reset(self, t: float, host: FaultHost) -> None:
        """A GPU reset does not touch the kubelet."""

    def on_reboot(self, t: float, host: FaultHost) -> None:
        if t >= self.onset:
            self.clear(t, host)


class InferenceOverload(ActiveFault):
    """Requests to an inference deployment jump by `factor` for `duration`; scaling out absorbs it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.factor = _param_float(self.params, "factor", float(self.rng.uniform(2.0, 4.0)), 1.0, 100.0)
        self.duration = _param_seconds(self.params, "duration", 3600.0)
        self.workload: str | None = self.params.get("deployment")
        self.truth_params["factor"] = round(self.factor, 2)

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        if self.workload is None:
            self.workload = host.workload_of(_gpu_row(self))
            self.truth_params["deployment"] = self.workload
        if self.workload is None:
            return
        # the truth says how far demand went past what the replicas serve (below 1: they absorbed the surge)
        self.truth_params["peak_demand"] = round(host.demand_peak(self.workload), 3)
        if t >= self.onset + self.duration:
            host.set_overload(self.workload, 1.0)
            self.clear(t, host)
        else:
            host.set_overload(self.workload, self.factor)

    def on_reset(self, t: float, host: FaultHost) -> None:
        """Load comes from users, not from the GPU."""


# --- The fabric's faults ----------------------------------------------------------------------------------
# Faults of the fabric: one HCA's link (parameter `hca`; HCA i carries GPU i's traffic) and what it does to
# the training job whose ranks use it. A collective runs at the pace of its slowest rank, so one bad link
# slows or stalls every rank of the job, on every node; the cause is on one node.
#
# - `ib_link_down`: the port goes DOWN/Disabled (link_downed +1); the job's ranks stall (hung) until the job
#   leaves the node.
# - `ib_link_flap`: every `every` (default 3m) the link drops for a step and retrains: link_downed and
#   link_error_recovery rise in bursts; the job stutters.
# - `ib_link_degraded`: the port trains at `rate_gbps` (default 200: 4X HDR instead of 4X NDR); the job slows.
# - `ib_symbol_errors`: a bad cable or transceiver: symbol errors (`per_s`, default 40/s) and receive errors
#   climb; retransmissions cost the job a little.
# - `nic_lost`: the HCA disappears (no sysfs directory); the job's ranks stall.
#
# Each is hardware (a cable, a transceiver, an HCA): a GPU reset or a reboot does not clear it.


def _fabric(host: FaultHost) -> Fabric | None:
    fabric = getattr(host, "fabric", None)
    return fabric if isinstance(fabric, Fabric) else None


class FabricFault(ActiveFault):
    """A fault of one HCA's port 1; `row` is the GPU row whose rank the HCA carries."""

    job_load_scale = 1.0  # what the fault leaves of the job's pace while it bites
    stalls_job = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.hca = int(_param_float(self.params, "hca", float(self.spec.gpu or 0), 0, 63))
        self.truth_params["hca"] = self.hca
        self.truth_params["device"] = f"mlx5_{self.hca}"

    def where(self, host: FaultHost) -> tuple[int, int]:
        assert self.row is not None
        return self.row // host.gpus_per_node, self.row % host.gpus_per_node

    def shape(self, t: float, dt: float, mods: Modifiers, host: FaultHost) -> None:
        fabric = _fabric(host)
        if fabric is None:
            return
        node, hca = self.where(host)
        bites = self.link(t, dt, fabric, node, hca)
        if not bites or self.row is None:
            return
        for r in fabric_rows(host, self.row):
            if self.stalls_job:
                mods.hung[r] = True
            else:
                mods.load_scale[r] *= self.job_load_scale

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        """Set the port's state and counters for this step; True while the fault slows or stalls the job."""
        raise NotImplementedError

    def on_reset(self, t: float, host: FaultHost) -> None:
        """A GPU reset or a reboot leaves a cable, a transceiver or an HCA as it is."""


def fabric_rows(host: FaultHost, row: int) -> list[int]:
    """The GPUs whose work crosses the fabric through `row`'s HCA: its job's, when that job spans more than one
    node. A replica, a notebook or a one-node job keeps its traffic inside the node (NVLink, PCIe), so a port
    down under it stops nothing."""
    if not host.workload_of(row):
        return []
    rows = host.lockstep_rows(row)
    return rows if len({r // host.gpus_per_node for r in rows}) > 1 else []


class IbLinkDown(FabricFault):
    stalls_job = True

    def fail(self, t: float, mods: Modifiers, host: FaultHost) -> None:
        fabric = _fabric(host)
        if fabric is not None:
            fabric.count("link_downed", *self.where(host), 1)

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        fabric.state[node, hca], fabric.phys_state[node, hca] = DOWN, DISABLED
        return True


class IbLinkFlap(FabricFault):
    job_load_scale = 0.4

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        every = self.params.get("every", "3m")
        try:
            self.every = max(parse_duration(every), 1.0)
        except ValueError as exc:
            raise ValueError(f"fault parameter every: {exc}") from exc
        self.next_drop = self.onset

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        if t >= self.next_drop:
            self.next_drop = t + self.every * float(self.rng.uniform(0.6, 1.4))
            fabric.count("link_downed", node, hca, 1)
            fabric.count("link_error_recovery", node, hca, int(self.rng.integers(2, 6)))
            fabric.count("symbol_error", node, hca, int(self.rng.integers(50, 500)))
            fabric.state[node, hca], fabric.phys_state[node, hca] = DOWN, POLLING
            return True
        fabric.state[node, hca], fabric.phys_state[node, hca] = ACTIVE, LINK_UP
        return False


class IbLinkDegraded(FabricFault):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rate = int(_param_float(self.params, "rate_gbps", 200.0, 50.0, 399.0))
        self.job_load_scale = self.rate / NDR_GBPS
        self.truth_params["rate_gbps"] = self.rate

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        fabric.rate_gbps[node, hca] = self.rate
        return True


class IbSymbolErrors(FabricFault):
    job_load_scale = 0.9

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.per_s = _param_float(self.params, "per_s", 40.0, 0.01, 1e6)

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        fabric.count("symbol_error", node, hca, int(self.rng.poisson(self.per_s * dt)))
        fabric.count("port_rcv_errors", node, hca, int(self.rng.poisson(self.per_s * dt / 20)))
        return True


class NicLost(FabricFault):
    stalls_job = True

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        fabric.present[node, hca] = False
        return True


_FABRIC_CLASSES: dict[str, type[ActiveFault]] = {
    "ib_link_down": IbLinkDown,
    "ib_link_flap": IbLinkFlap,
    "ib_link_degraded": IbLinkDegraded,
    "ib_symbol_errors": IbSymbolErrors,
    "nic_lost": NicLost,
}


FAULT_CLASSES: dict[str, type[ActiveFault]] = {
    "ecc_sbe_storm": EccSbeStorm,
    "xid48_dbe": Xid48Dbe,
    "row_remap_exhaustion": RowRemapExhaustion,
    "thermal_runaway": ThermalRunaway,
    "nvlink_degradation": NvlinkDegradation,
    "memory_leak": MemoryLeak,
    "xid79": Xid79,
    "gsp_timeout": GspTimeout,
    "straggler": Straggler,
    "hung_job": HungJob,
    "pcie_replay_storm": PcieReplayStorm,
    "node_not_ready": NodeNotReady,
    "inference_overload": InferenceOverload,
    **_FABRIC_CLASSES,
}


def build_faults(scenario: Scenario, start: float, rng: np.random.Generator) -> list[ActiveFault]:
    """One ActiveFault per scenario fault (plus background faults), each with its own seeded stream."""
    from simulator.scenario import FABRIC_KINDS, node_index

    specs = list(scenario.faults)
    if scenario.background_faults is not None:
        specs += background_faults(scenario, rng)
    faults: list[ActiveFault] = []
    seeds = rng.integers(0, 2**63 - 1, len(specs))
    for i, (spec, seed) in enumerate(zip(specs, seeds, strict=True)):
        row = None
        gpu = spec.gpu if spec.kind not in FABRIC_KINDS else spec.params.get("hca", spec.gpu or 0)
        if isinstance(gpu, int) and not isinstance(gpu, bool):
            if spec.kind in FABRIC_KINDS and not 0 <= gpu < scenario.fleet.gpus_per_node:
                raise ValueError(f"faults[{i}] ({spec.kind}): no HCA {gpu} on a node with "
                                 f"{scenario.fleet.gpus_per_node} GPUs (one HCA per GPU)")
            row = node_index(spec.node) * scenario.fleet.gpus_per_node + gpu
        try:
            faults.append(FAULT_CLASSES[spec.kind](spec, start, row, np.random.default_rng(int(seed))))
        except ValueError as exc:
            raise ValueError(f"faults[{i}] ({spec.kind}): {exc}") from exc
    return faults


def background_faults(scenario: Scenario, rng: np.random.Generator) -> list[FaultSpec]:
    """Faults drawn as a Poisson process at the Llama 3 field rate times `scale`, mixed by cause."""
    assert scenario.background_faults is not None
    fleet = scenario.fleet
    expected = (
        LLAMA3_INTERRUPTIONS_PER_GPU_S * fleet.n_gpus * scenario.duration * scenario.background_faults.scale
    )
    kinds = [k for k, _ in FIELD_MIX]
    weights = np.array([w for _, w in FIELD_MIX])
    weights /= weights.sum()
    specs = []
    for _ in range(int(rng.poisson(expected))):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        node = node_name(int(rng.integers(0, fleet.nodes)))
        gpu = None if kind in NODE_LEVEL_KINDS else int(rng.integers(0, fleet.gpus_per_node))
        at = float(rng.uniform(0, scenario.duration))
        specs.append(FaultSpec(kind=kind, node=node, gpu=gpu, at=at))
    return sorted(specs, key=lambda s: s.at)
