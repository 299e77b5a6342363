"""The fabric a node's GPUs talk over: one ConnectX-class HCA per GPU (`mlx5_0`, `mlx5_1`, …; port 1), with the
port state, physical state, rate and counters the kernel shows under `/sys/class/infiniband`. `write_sysfs`
writes one node's tree in the kernel's own formats, so the real node exporter (`--path.sysfs`) reads it and
serves the `node_infiniband_*` series its infiniband collector names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

# The counters under ports/<port>/counters that the node exporter's collector reads.
COUNTERS = ("link_downed", "link_error_recovery", "symbol_error", "port_rcv_errors", "port_xmit_discards",
            "port_xmit_wait", "port_xmit_data", "port_rcv_data")
STATES = {1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
PHYS_STATES = {1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining", 5: "LinkUp",
               6: "LinkErrorRecovery", 7: "Phy Test"}
RATES = {400: "400 Gb/sec (4X NDR)", 200: "200 Gb/sec (4X HDR)", 100: "100 Gb/sec (4X EDR)",
         50: "50 Gb/sec (2X HDR)"}
ACTIVE, DOWN = 4, 1
LINK_UP, POLLING, DISABLED = 5, 2, 3
NDR_GBPS = 400
# A training step's collectives use this share of the link while the GPU is busy.
LINK_SHARE_BUSY = 0.35
BOARD_ID, FIRMWARE, HCA_TYPE = "MT_0000000838", "28.39.1002", "MT4129"  # a ConnectX-7 as the kernel names it


def hca_name(index: int) -> str:
    return f"mlx5_{index}"


class Fabric:
    """Every node's HCAs: arrays `[node, hca]` of port state, physical state, rate (Gb/s), presence and the
    counters (whole numbers; data in 4-octet words, as the kernel counts them)."""

    def __init__(self, n_nodes: int, hcas_per_node: int) -> None:
        shape = (n_nodes, hcas_per_node)
        self.hcas_per_node = hcas_per_node
        self.state = np.full(shape, ACTIVE, dtype=np.int64)
        self.phys_state = np.full(shape, LINK_UP, dtype=np.int64)
        self.rate_gbps = np.full(shape, NDR_GBPS, dtype=np.int64)
        self.present = np.ones(shape, dtype=bool)
        self.counters: dict[str, npt.NDArray[np.uint64]] = {name: np.zeros(shape, dtype=np.uint64)
                                                            for name in COUNTERS}

    def step(self, dt: float, load: npt.NDArray[np.float64]) -> None:
        """Advance `dt` seconds with each HCA's GPU busy `load` (0..1, `[node, hca]`): data flows over active
        links in proportion, and a busy link waits a little for credits."""
        up = (self.state == ACTIVE) & self.present
        busy = np.clip(np.nan_to_num(load), 0.0, 1.0) * up
        words = busy * LINK_SHARE_BUSY * self.rate_gbps * 1e9 / 8 / 4 * dt
        self.counters["port_xmit_data"] += words.astype(np.uint64)
        self.counters["port_rcv_data"] += words.astype(np.uint64)
        self.counters["port_xmit_wait"] += (busy * 20.0 * dt).astype(np.uint64)

    def count(self, name: str, node: int, hca: int, amount: int) -> None:
        self.counters[name][node, hca] += np.uint64(max(amount, 0))

    def write_sysfs(self, root: str | Path, node: int) -> Path:
        """Write node `node`'s `class/infiniband` tree under `root` (the directory given as `--path.sysfs`); an
        HCA that is not present has no directory, as after the driver lost it. Files are replaced whole, so a
        reader never sees half a value."""
        base = Path(root) / "class" / "infiniband"
        base.mkdir(parents=True, exist_ok=True)
        for hca in range(self.hcas_per_node):
            device = base / hca_name(hca)
            if not self.present[node, hca]:
                _remove_tree(device)
                continue
            port = device / "ports" / "1"
            (port / "counters").mkdir(parents=True, exist_ok=True)
            _write(device / "board_id", BOARD_ID)
            _write(device / "fw_ver", FIRMWARE)
            _write(device / "hca_type", HCA_TYPE)
            state, phys = int(self.state[node, hca]), int(self.phys_state[node, hca])
            _write(port / "state", f"{state}: {STATES[state]}")
            _write(port / "phys_state", f"{phys}: {PHYS_STATES[phys]}")
            rate = int(self.rate_gbps[node, hca])
            _write(port / "rate", RATES.get(rate, f"{rate} Gb/sec (4X)"))
            for name in COUNTERS:
                _write(port / "counters" / name, str(int(self.counters[name][node, hca])))
        return Path(root)


# The node exporter's names for what `write_sysfs` writes, with the factor it applies (data: 4-octet words).
EXPORTED: dict[str, tuple[str, float]] = {
    "link_downed": ("node_infiniband_link_downed_total", 1.0),
    "link_error_recovery": ("node_infiniband_link_error_recovery_total", 1.0),
    "symbol_error": ("node_infiniband_symbol_error_total", 1.0),
    "port_rcv_errors": ("node_infiniband_port_errors_received_total", 1.0),
    "port_xmit_discards": ("node_infiniband_port_discards_transmitted_total", 1.0),
    "port_xmit_wait": ("node_infiniband_port_transmit_wait_total", 1.0),
    "port_xmit_data": ("node_infiniband_port_data_transmitted_bytes_total", 4.0),
    "port_rcv_data": ("node_infiniband_port_data_received_bytes_total", 4.0),
}


def exported_samples(fabric: Fabric, nodes: tuple[str, ...], node_up: npt.NDArray[np.bool_] | None = None
                     ) -> tuple[tuple[tuple[str, str, str], ...], dict[str, npt.NDArray[np.float64]]]:
    """One sample of every port as the node exporter would serve it: rows (node, device, port) and values per
    `node_infiniband_*` name; a lost HCA's row, and every row of a node that is down, is NaN (no series)."""
    hcas = tuple((node, hca_name(h), "1") for node in nodes for h in range(fabric.hcas_per_node))
    up = np.ones(len(nodes), dtype=bool) if node_up is None else node_up
    gone = (~fabric.present | ~up[:, None]).reshape(-1)

    def flat(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = values.reshape(-1).astype(np.float64)
        out[gone] = np.nan
        return out

    out = {
        "node_infiniband_state_id": flat(fabric.state.astype(np.float64)),
        "node_infiniband_physical_state_id": flat(fabric.phys_state.astype(np.float64)),
        "node_infiniband_rate_bytes_per_second": flat(fabric.rate_gbps * 1e9 / 8),
    }
    for counter, (name, factor) in EXPORTED.items():
        out[name] = flat(fabric.counters[counter].astype(np.float64) * factor)
    return hcas, out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
