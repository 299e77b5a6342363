"""The twin's fabric: one HCA per GPU, data counters that follow the GPUs' load, and a sysfs tree in the
kernel's formats ("4: ACTIVE", "400 Gb/sec (4X NDR)", whole-number counters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.fabric import COUNTERS, DOWN, Fabric
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin


def test_the_sysfs_tree_is_in_the_kernels_formats(tmp_path: Path) -> None:
    fabric = Fabric(2, 8)
    fabric.step(15.0, np.full((2, 8), 0.5))
    fabric.state[1, 3], fabric.phys_state[1, 3] = DOWN, 3
    fabric.present[1, 7] = False
    fabric.count("symbol_error", 1, 2, 12)
    fabric.write_sysfs(tmp_path, 1)
    ib = tmp_path / "class" / "infiniband"
    assert sorted(p.name for p in ib.iterdir()) == [f"mlx5_{i}" for i in range(7)]
    port = ib / "mlx5_0" / "ports" / "1"
    assert (port / "state").read_text() == "4: ACTIVE\n"
    assert (port / "phys_state").read_text() == "5: LinkUp\n"
    assert (port / "rate").read_text() == "400 Gb/sec (4X NDR)\n"
    assert (ib / "mlx5_3" / "ports" / "1" / "state").read_text() == "1: DOWN\n"
    assert (ib / "mlx5_3" / "ports" / "1" / "phys_state").read_text() == "3: Disabled\n"
    assert (ib / "mlx5_2" / "ports" / "1" / "counters" / "symbol_error").read_text() == "12\n"
    assert sorted(p.name for p in (port / "counters").iterdir()) == sorted(COUNTERS)
    words = int((port / "counters" / "port_xmit_data").read_text())
    assert words == int(0.5 * 0.35 * 400e9 / 8 / 4 * 15.0)
    assert int((ib / "mlx5_3" / "ports" / "1" / "counters" / "port_xmit_data").read_text()) > 0  # before it went down
    assert not list(tmp_path.rglob(".*.tmp"))


def test_the_twin_moves_data_over_busy_nodes_links(tmp_path: Path) -> None:
    twin = Twin(scenario_from_dict({"name": "f", "seed": 1, "fleet": {"nodes": 2, "gpus_per_node": 4},
                                    "duration": "10m", "step": "15s",
                                    "workloads": [{"type": "training", "name": "job", "nodes": 1}]}))
    twin.advance_to(twin.t + 300)
    sent = twin.fabric.counters["port_xmit_data"].astype(float)
    assert sent.shape == (2, 4) and (sent.sum(axis=1) > 0).sum() >= 1
    assert (twin.write_sysfs(tmp_path, "gpu-node-002") / "class" / "infiniband" / "mlx5_3").is_dir()
