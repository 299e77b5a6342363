"""The twin's fabric through the real node exporter: its infiniband collector reads the sysfs tree the twin
writes per node and serves `node_infiniband_*` with its own names and labels; Prometheus scrapes one exporter per
node (labelled with the node), and the telemetry connector reads the series into the FleetFrame per node and HCA.
Without a node exporter the frame has no HCA rows and nothing fails."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.telemetry import DEFAULT_HCA_METRICS, PrometheusTelemetry
from simulator.fabric import DOWN
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin
from tests.node_exporter import running_node_exporter
from tests.prometheus_server import running_prometheus
from tests.waiting import wait_for

pytestmark = pytest.mark.prometheus
NODES = ("gpu-node-001", "gpu-node-002")


def fabric_twin() -> Twin:
    return Twin(scenario_from_dict({
        "name": "fabric", "seed": 7, "fleet": {"nodes": 2, "gpus_per_node": 8}, "duration": "2h", "step": "15s",
        "workloads": [{"type": "training", "name": "job", "nodes": 2}], "faults": []}))


def test_the_node_exporter_serves_the_twins_fabric_with_its_own_names(tmp_path: Path) -> None:
    twin = fabric_twin()
    twin.advance_to(twin.t + 600)
    twin.fabric.state[0, 5], twin.fabric.phys_state[0, 5] = DOWN, 3
    sysfs = twin.write_sysfs(tmp_path / "sys", NODES[0])
    with running_node_exporter(sysfs, tmp_path) as exporter:
        text = httpx.get(f"{exporter.url}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if s.name.startswith("node_infiniband_")}
    names = {name for name, _ in samples}
    assert set(DEFAULT_HCA_METRICS) <= names, sorted(set(DEFAULT_HCA_METRICS) - names)
    port = (("device", "mlx5_0"), ("port", "1"))
    assert samples[("node_infiniband_state_id", port)] == 4
    assert samples[("node_infiniband_physical_state_id", port)] == 5
    assert samples[("node_infiniband_rate_bytes_per_second", port)] == 400e9 / 8
    assert samples[("node_infiniband_state_id", (("device", "mlx5_5"), ("port", "1")))] == 1
    assert samples[("node_infiniband_port_data_transmitted_bytes_total", port)] == \
        4 * int(twin.fabric.counters["port_xmit_data"][0, 0]) > 0
    info = {labels for name, labels in samples if name == "node_infiniband_info"}
    assert (("board_id", "MT_0000000838"), ("device", "mlx5_3"), ("firmware_version", "28.39.1002"),
            ("hca_type", "MT4129")) in info
    assert len({dict(labels)["device"] for name, labels in samples if name == "node_infiniband_state_id"}) == 8


def test_the_connector_reads_the_fabric_per_node_and_hca_through_prometheus(tmp_path: Path) -> None:
    twin = fabric_twin()
    dirs = {node: tmp_path / node / "sys" for node in NODES}
    for node, root in dirs.items():
        twin.write_sysfs(root, node)
    with ExitStack() as stack:
        exporters = {node: stack.enter_context(running_node_exporter(root, tmp_path / node))
                     for node, root in dirs.items()}
        job = {"job_name": "node", "scrape_interval": "500ms", "scrape_timeout": "500ms",
               "static_configs": [{"targets": [e.address], "labels": {"node": node}} for node, e in exporters.items()]}
        prom = stack.enter_context(running_prometheus(tmp_path / "prom", extra_jobs=[job]))
        began = time.time() - 5.0  # a window that always holds whole query steps, however soon it is asked for
        for _ in range(4):
            twin.step()
            for node, root in dirs.items():
                twin.write_sysfs(root, node)
        twin.fabric.state[1, 2], twin.fabric.phys_state[1, 2] = DOWN, 3
        twin.write_sysfs(dirs[NODES[1]], NODES[1])
        telemetry = PrometheusTelemetry(prom.url)

        def down_seen() -> bool:
            frame = telemetry.frame(began, time.time(), 1.0, metrics=[])
            state = frame.hca_metrics.get("node_infiniband_state_id")
            if state is None or len(frame.hcas) < 16:
                return False
            row = frame.hcas.index(("gpu-node-002", "mlx5_2", "1"))
            return bool(state[row, -1] == DOWN)

        wait_for(down_seen, timeout=30, interval=0.25, message="Prometheus did not show mlx5_2 down on gpu-node-002")
        frame = telemetry.frame(began, time.time(), 1.0, metrics=[])
    assert frame.hcas[:2] == (("gpu-node-001", "mlx5_0", "1"), ("gpu-node-001", "mlx5_1", "1"))
    assert len(frame.hcas) == 16 and set(frame.hca_metrics) == set(DEFAULT_HCA_METRICS)
    rate = frame.hca_metrics["node_infiniband_rate_bytes_per_second"]
    assert np.nanmax(rate) == 400e9 / 8
    sent = frame.hca_metrics["node_infiniband_port_data_transmitted_bytes_total"]
    assert np.nanmax(sent) > 0


def test_without_a_node_exporter_the_frame_has_no_fabric(tmp_path: Path) -> None:
    with running_prometheus(tmp_path / "prom") as prom:
        frame = PrometheusTelemetry(prom.url).frame(time.time() - 60, time.time(), 15.0)
    assert frame.hcas == () and dict(frame.hca_metrics) == {}
