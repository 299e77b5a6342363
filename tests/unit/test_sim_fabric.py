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


def fabric_scenario(*faults: dict[str, object]) -> Twin:
    return Twin(scenario_from_dict({
        "name": "ff", "seed": 5, "fleet": {"nodes": 3, "gpus_per_node": 8}, "duration": "2h", "step": "15s",
        "workloads": [{"type": "training", "name": "job", "nodes": 2}], "faults": list(faults)}))


def job_rows(twin: Twin) -> list[int]:
    return sorted(twin.book.rows["job"])


def test_a_link_down_stalls_the_whole_job_from_one_node() -> None:
    twin = fabric_scenario({"kind": "ib_link_down", "node": "gpu-node-001", "hca": 3, "at": "20m"})
    node = twin.nodes.index(twin.nodes[job_rows(twin)[0] // 8])
    assert node == 0, "the job runs on gpu-node-001"
    twin.advance_to(twin.t + 15 * 60)
    before = twin.physics.util[job_rows(twin)].copy()
    twin.advance_to(twin.t + 15 * 60)
    assert (twin.fabric.state[0, 3], twin.fabric.phys_state[0, 3]) == (1, 3)
    assert int(twin.fabric.counters["link_downed"][0, 3]) == 1
    assert before.mean() > 50 and twin.physics.tensor_active[job_rows(twin)].max() < 0.05
    truth = twin.truth()["faults"][0]
    assert (truth["kind"], truth["node"], truth["gpu"], truth["params"]["device"]) == \
        ("ib_link_down", "gpu-node-001", None, "mlx5_3")


def test_a_degraded_link_slows_every_rank_and_flaps_come_in_bursts() -> None:
    slow = fabric_scenario({"kind": "ib_link_degraded", "node": "gpu-node-002", "hca": 1, "at": "10m"})
    healthy = fabric_scenario()
    slow.advance_to(slow.t + 40 * 60)
    healthy.advance_to(healthy.t + 40 * 60)
    rows = job_rows(slow)
    assert slow.fabric.rate_gbps[1, 1] == 200
    assert slow.physics.util[rows].mean() < 0.8 * healthy.physics.util[rows].mean()
    flap = fabric_scenario({"kind": "ib_link_flap", "node": "gpu-node-002", "hca": 4, "at": "10m", "every": "2m"})
    flap.advance_to(flap.t + 50 * 60)
    downs = int(flap.fabric.counters["link_downed"][1, 4])
    assert 10 <= downs <= 30 and int(flap.fabric.counters["link_error_recovery"][1, 4]) >= 2 * downs


def test_symbol_errors_and_a_lost_hca() -> None:
    twin = fabric_scenario({"kind": "ib_symbol_errors", "node": "gpu-node-001", "hca": 0, "at": "5m", "per_s": 10},
                           {"kind": "nic_lost", "node": "gpu-node-003", "hca": 7, "at": "5m"})
    twin.advance_to(twin.t + 15 * 60)
    assert 4000 < int(twin.fabric.counters["symbol_error"][0, 0]) < 8000
    assert not twin.fabric.present[2, 7] and twin.fabric.present[2, :7].all()


def test_an_hca_beyond_the_node_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="no HCA 8"):
        fabric_scenario({"kind": "nic_lost", "node": "gpu-node-001", "hca": 8, "at": "5m"})


def test_the_served_twin_keeps_every_nodes_tree_current(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from entrypoints.cli import cli
    from simulator.server import TwinClock
    from tests.waiting import wait_for

    twin = fabric_scenario({"kind": "ib_link_down", "node": "gpu-node-002", "hca": 4, "at": "5m"})
    clock = TwinClock(twin, speed=600.0, sysfs_root=tmp_path)
    state = tmp_path / "gpu-node-002" / "class" / "infiniband" / "mlx5_4" / "ports" / "1" / "state"
    assert state.read_text() == "4: ACTIVE\n" and (tmp_path / "gpu-node-003" / "class" / "infiniband").is_dir()
    clock.start()
    try:
        wait_for(lambda: state.read_text() == "1: DOWN\n", timeout=20, message="the tree never showed the link down")
    finally:
        clock.stop()
    assert clock.error is None
    assert "--sysfs" in CliRunner().invoke(cli, ["sim", "--help"]).output


def test_a_link_down_under_work_that_stays_on_its_node_stops_nothing() -> None:
    twin = Twin(scenario_from_dict({
        "name": "fs", "seed": 5, "fleet": {"nodes": 3, "gpus_per_node": 8}, "duration": "2h", "step": "15s",
        "workloads": [{"type": "training", "name": "solo", "nodes": 1},
                      {"type": "inference", "name": "api", "replicas": 12, "peak_load": 0.9, "trough_load": 0.9}],
        "faults": [{"kind": "ib_link_down", "node": "gpu-node-001", "hca": 2, "at": "10m"},
                   {"kind": "ib_link_down", "node": "gpu-node-002", "hca": 2, "at": "10m"}]}))
    solo = sorted(twin.book.rows["solo"])
    replica = next(r for r in twin.book.rows["api"] if r % 8 == 2)
    hit = {solo[0] // 8, replica // 8}
    assert hit <= {0, 1}, "the one-node job and a replica sit on the two nodes whose mlx5_2 goes down"
    twin.advance_to(twin.t + 40 * 60)
    assert all(twin.fabric.state[n, 2] == DOWN for n in (0, 1))
    assert twin.physics.tensor_active[solo].min() > 0.3  # its ranks talk over NVLink, not the fabric
    assert twin.physics.util[replica] > 50  # a replica serves from its own GPU
