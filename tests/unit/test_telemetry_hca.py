"""The fabric's series in the FleetFrame: rows per (node, device, port), the node from `node`, `Hostname` or
`instance` less its port; a series naming no node is skipped and noted; none at all means no HCA rows."""

from __future__ import annotations

import numpy as np

from connectors.telemetry import FrameAssembler, RawSeries
from connectors.telemetry.port import hca_promql, node_of


def test_node_labels() -> None:
    assert node_of({"node": "gpu-node-001", "instance": "10.0.0.1:9100"}) == "gpu-node-001"
    assert node_of({"instance": "gpu-node-002:9100"}) == "gpu-node-002"
    assert node_of({"instance": "[fd00::2]:9100"}) == "fd00::2"
    assert node_of({"instance": "fd00::3"}) == "fd00::3"
    assert node_of({}) == ""


def test_hca_rows_and_skipped_series() -> None:
    grid = np.array([0.0, 15.0])
    assembler = FrameAssembler(grid)
    series = {"node_infiniband_state_id": [
        RawSeries({"node": "n2", "device": "mlx5_1", "port": "1"}, np.array([4.0, 1.0])),
        RawSeries({"instance": "n1:9100", "device": "mlx5_0", "port": "1"}, np.array([4.0, 4.0])),
        RawSeries({"device": "mlx5_9", "port": "1"}, np.array([4.0, 4.0]))]}
    frame = assembler.build({}, {}, series)
    assert frame.hcas == (("n1", "mlx5_0", "1"), ("n2", "mlx5_1", "1"))
    np.testing.assert_array_equal(frame.hca_metrics["node_infiniband_state_id"], [[4.0, 4.0], [4.0, 1.0]])
    assert len(assembler.skipped) == 1 and "mlx5_9" in assembler.skipped[0]
    kept = frame.rows(np.array([], dtype=bool))
    assert kept.hcas == () and kept.hca_metrics["node_infiniband_state_id"].shape == (0, 2)
    assert frame.until(0.0).hca_metrics["node_infiniband_state_id"].shape == (2, 1)


def test_no_fabric_series_means_no_rows() -> None:
    frame = FrameAssembler(np.array([0.0])).build({}, {})
    assert frame.hcas == () and dict(frame.hca_metrics) == {}


def test_one_query_for_all_fabric_metrics() -> None:
    assert hca_promql(["a_total", "b"]) == '{__name__=~"a_total|b"}'
