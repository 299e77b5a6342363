"""A batch scenario backfilled into a real Prometheus with promtool reads back as the same frames
as the direct-scrape adapter reading the same run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from connectors.telemetry import PrometheusTelemetry, ScrapeTelemetry
from simulator.batch import write_openmetrics
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin
from tests.prometheus_server import running_prometheus

pytestmark = pytest.mark.prometheus

SCENARIO = {
    "name": "backfill",
    "seed": 9,
    "fleet": {"nodes": 2, "gpus_per_node": 4},
    "duration": "30m",
    "step": "30s",
    "workloads": [{"type": "training", "name": "job", "nodes": 1}],
    "faults": [{"kind": "ecc_sbe_storm", "node": "gpu-node-001", "gpu": 2, "at": "5m", "lead": "20m"}],
}


def test_promtool_backfill_reads_back_like_direct_scrape(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool (Debian's prometheus package) is not installed: run `make test`")
    om = tmp_path / "run.om"
    write_openmetrics(Twin(scenario_from_dict(SCENARIO)), om)
    data = tmp_path / "tsdb"
    made = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    twin = Twin(scenario_from_dict(SCENARIO))
    direct = ScrapeTelemetry(["unused"])
    while not twin.finished:
        twin.step()
        direct.ingest(twin.metrics_text(timestamps=True), "twin", twin.t)
    window = (twin.start + 30, twin.end, 30.0)
    with running_prometheus(tmp_path / "prom", storage=data) as prom:
        backfilled = PrometheusTelemetry(prom.url).frame(*window)
    scraped = direct.frame(*window)
    assert backfilled.n_gpus == 8 and backfilled.n_steps == 60
    assert backfilled.gpus == scraped.gpus
    for name, arr in scraped.metrics.items():
        np.testing.assert_array_equal(backfilled.metrics[name], arr, err_msg=name)
    for name, arr in scraped.node_metrics.items():
        np.testing.assert_array_equal(backfilled.node_metrics[name], arr, err_msg=name)
    row = [backfilled.gpus.key(i) for i in range(backfilled.n_gpus)].index(("gpu-node-001", 2))
    assert backfilled.metrics["DCGM_FI_DEV_XID_ERRORS"][row, -1] == 48
