"""Faults of the fabric: one HCA's link (parameter `hca`; HCA i carries GPU i's traffic) and what it does to
the training job whose ranks use it. A collective runs at the pace of its slowest rank, so one bad link
slows or stalls every rank of the job, on every node; the cause is on one node.

- `ib_link_down`: the port goes DOWN/Disabled (link_downed +1); the job's ranks stall (hung) until the job
  leaves the node.
- `ib_link_flap`: every `every` (default 3m) the link drops for a step and retrains: link_downed and
  link_error_recovery rise in bursts; the job stutters.
- `ib_link_degraded`: the port trains at `rate_gbps` (default 200: 4X HDR instead of 4X NDR); the job slows.
- `ib_symbol_errors`: a bad cable or transceiver: symbol errors (`per_s`, default 40/s) and receive errors
  climb; retransmissions cost the job a little.
- `nic_lost`: the HCA disappears (no sysfs directory); the job's ranks stall.

Each is hardware (a cable, a transceiver, an HCA): a GPU reset or a reboot does not clear it."""

from __future__ import annotations

from typing import Any

from simulator.durations import parse_duration
from simulator.fabric import ACTIVE, DISABLED, DOWN, LINK_UP, NDR_GBPS, POLLING, Fabric
from simulator.faults import ActiveFault, FaultHost, _param_float
from simulator.physics import Modifiers


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
        rows = host.workload_rows(self.row) if host.workload_of(self.row) else []
        for r in rows:
            if self.stalls_job:
                mods.hung[r] = True
            else:
                mods.load_scale[r] *= self.job_load_scale

    def link(self, t: float, dt: float, fabric: Fabric, node: int, hca: int) -> bool:
        """Set the port's state and counters for this step; True while the fault slows or stalls the job."""
        raise NotImplementedError

    def on_reset(self, t: float, host: FaultHost) -> None:
        """A GPU reset or a reboot leaves a cable, a transceiver or an HCA as it is."""


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


FABRIC_FAULT_CLASSES: dict[str, type[ActiveFault]] = {
    "ib_link_down": IbLinkDown,
    "ib_link_flap": IbLinkFlap,
    "ib_link_degraded": IbLinkDegraded,
    "ib_symbol_errors": IbSymbolErrors,
    "nic_lost": NicLost,
}
