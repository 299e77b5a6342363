"""The twin served over HTTP: /metrics in the exporter's content type, and a clock at `speed`."""

from __future__ import annotations

import httpx
import pytest

from simulator.scenario import scenario_from_dict
from simulator.server import PROMETHEUS_TEXT, TwinClock, build_app
from simulator.twin import Twin
from tests.sim_server import serving
from tests.waiting import wait_for


def twin() -> Twin:
    return Twin(
        scenario_from_dict({"name": "s", "fleet": {"nodes": 2, "gpus_per_node": 2}, "duration": "1h"})
    )


def test_metrics_served_over_http() -> None:
    tw = twin()
    tw.step()
    with serving(build_app(tw)) as url:
        plain = httpx.get(f"{url}/metrics")
        stamped = httpx.get(f"{url}/metrics", params={"timestamps": "true"})
        health = httpx.get(f"{url}/healthz")
    assert plain.status_code == 200 and plain.headers["content-type"] == PROMETHEUS_TEXT
    assert plain.text == tw.metrics_text()
    first = next(line for line in stamped.text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    assert first.endswith(f" {round(tw.t * 1000)}")
    assert health.status_code == 200


def test_one_port_serves_metrics_and_the_kubernetes_api() -> None:
    tw = twin()
    tw.step()
    with serving(build_app(tw)) as url:
        version = httpx.get(f"{url}/version")
        nodes = httpx.get(f"{url}/api/v1/nodes")
        metrics = httpx.get(f"{url}/metrics")
    assert version.status_code == 200 and "gitVersion" in version.json()
    names = [n["metadata"]["name"] for n in nodes.json()["items"]]
    assert names == ["gpu-node-001", "gpu-node-002"]
    assert 'kube_node_status_condition{node="gpu-node-001",condition="Ready",status="true"} 1' in metrics.text


def test_clock_runs_simulated_time_at_speed() -> None:
    tw = twin()
    clock = TwinClock(tw, speed=600.0, tick_s=0.01)
    begin = tw.t
    clock.start()
    try:
        wait_for(lambda: tw.t - begin >= 300, timeout=10.0, message="five simulated minutes did not pass")
    finally:
        clock.stop()
    assert clock.error is None
    with pytest.raises(ValueError):
        TwinClock(tw, speed=0)
