"""The Prometheus adapter against a real Prometheus scraping the running twin, and against servers
that misbehave; direct scrape and Prometheus give identical frames for the same data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.telemetry import (
    DEFAULT_GPU_METRICS,
    PrometheusTelemetry,
    ScrapeTelemetry,
    TelemetryBadResponse,
    TelemetryQueryError,
    TelemetryTimeout,
    TelemetryUnavailable,
)
from detectors.frame import FleetFrame
from detectors.metrics import NODE_READY
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin
from tests.prometheus_server import free_port, running_prometheus
from tests.sim_server import serving
from tests.waiting import wait_for

pytestmark = pytest.mark.prometheus


def twin_for_test(start: float) -> Twin:
    data = {
        "name": "identity",
        "seed": 5,
        "start": start,
        "fleet": {"nodes": 3, "gpus_per_node": 4},
        "duration": "2h",
        "step": "15s",
        "workloads": [
            {"type": "training", "name": "job", "nodes": 2},
            {"type": "inference", "name": "api", "replicas": 2},
        ],
        "faults": [
            {"kind": "straggler", "node": "gpu-node-001", "gpu": 1, "at": "2m"},
            {"kind": "xid48_dbe", "node": "gpu-node-003", "gpu": 0, "at": "3m"},
        ],
    }
    return Twin(scenario_from_dict(data))


def assert_same_frames(a: FleetFrame, b: FleetFrame) -> None:
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert a.gpus == b.gpus
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    assert a.nodes == b.nodes
    for name in a.node_metrics:
        np.testing.assert_array_equal(a.node_metrics[name], b.node_metrics[name], err_msg=name)


def test_prometheus_and_direct_scrape_give_identical_frames(tmp_path: Path) -> None:
    start = float(int(time.time()) - 1200)
    twin = twin_for_test(start)
    with serving(build_app(twin, with_kubernetes=False)) as url:
        target = url.removeprefix("http://")
        scraper = ScrapeTelemetry([f"{url}/metrics?timestamps=true"])
        params = {"timestamps": ["true"]}
        with running_prometheus(tmp_path, [target], scrape_interval="200ms", metrics_params=params) as prom:
            for _ in range(40):
                twin.step()
                scraper.scrape()

                def scraped(t: float = twin.t) -> bool:
                    answer = httpx.get(
                        f"{prom.url}/api/v1/query",
                        params={"query": "max(timestamp(DCGM_FI_DEV_GPU_TEMP))", "time": t},
                    ).json()
                    result = answer["data"]["result"]
                    return bool(result) and float(result[0]["value"][1]) == t

                wait_for(scraped, timeout=10.0, message=f"prometheus did not scrape t={twin.t}")
            adapter = PrometheusTelemetry(prom.url)
            window = (start + 15, twin.t, 15.0)
            from_prometheus = adapter.frame(*window)
            direct = scraper.frame(*window)
    assert from_prometheus.n_gpus == 12 and from_prometheus.n_steps == 40
    assert set(from_prometheus.metrics) == set(DEFAULT_GPU_METRICS)
    assert_same_frames(from_prometheus, direct)
    temps = from_prometheus.metrics["DCGM_FI_DEV_GPU_TEMP"]
    assert np.all(np.isfinite(temps)) and 20 < temps.mean() < 90
    xid = from_prometheus.metrics["DCGM_FI_DEV_XID_ERRORS"]
    row = from_prometheus.gpus.hostname.index("gpu-node-003")
    assert xid[row, -1] == 48
    assert from_prometheus.nodes == ("gpu-node-001", "gpu-node-002", "gpu-node-003")
    assert np.all(from_prometheus.node_metrics[NODE_READY] == 1)
    trainer = from_prometheus.gpus.pod[0]
    assert trainer.startswith("job-worker-") and from_prometheus.gpus.namespace[0] == "training"


def test_prometheus_down_is_unavailable_after_retries() -> None:
    sleeps: list[float] = []
    adapter = PrometheusTelemetry(
        f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.01, sleep=sleeps.append
    )
    with pytest.raises(TelemetryUnavailable, match="is it running"):
        adapter.frame(1_700_000_000, 1_700_000_060, 15, metrics=["DCGM_FI_DEV_GPU_TEMP"])
    assert sleeps == [0.01, 0.02]


def misbehaving_prometheus() -> tuple[Starlette, list[str]]:
    calls: list[str] = []

    async def query_range(request: Request) -> Response:
        query = request.query_params["query"]
        calls.append(query)
        if query == "garbage":
            return PlainTextResponse("<html>not prometheus</html>")
        if query == "wrong_shape":
            return JSONResponse({"status": "success", "data": {"result": [{"labels": {}}]}})
        if query == "busy":
            return PlainTextResponse("overloaded", status_code=503)
        if query == "bad{":
            return JSONResponse({"status": "error", "errorType": "bad_data", "error": "parse error"}, 400)
        if query == "slow":
            await asyncio.sleep(1.0)
        series = [
            {
                "metric": {
                    "__name__": query,
                    "hostname": "n1",
                    "gpu": "0",
                    "UUID": "GPU-1",
                    "exported_pod": "p1",
                    "pod": "dcgm-exporter-abc",
                    "exported_namespace": "ml",
                },
                "values": [[1_700_000_000, "61"], [1_700_000_015, "NaN"], [1_700_000_030, "oops"]],
            },
            {"metric": {"__name__": query, "hostname": "n1", "gpu": "x"}, "values": [[1_700_000_000, "1"]]},
        ]
        return JSONResponse({"status": "success", "data": {"resultType": "matrix", "result": series}})

    return Starlette(routes=[Route("/api/v1/query_range", query_range)]), calls


def test_prometheus_adapter_translates_misbehaviour() -> None:
    app, calls = misbehaving_prometheus()
    with serving(app) as url:
        adapter = PrometheusTelemetry(url, retries=1, backoff_s=0.0, timeout_s=0.3, sleep=lambda s: None)
        window = (1_700_000_000, 1_700_000_030, 15)
        with pytest.raises(TelemetryBadResponse, match="not a Prometheus"):
            adapter.frame(*window, metrics=["garbage"], node_series={})
        with pytest.raises(TelemetryBadResponse, match="lacks metric/values"):
            adapter.frame(*window, metrics=["wrong_shape"], node_series={})
        with pytest.raises(TelemetryUnavailable, match="temporarily unavailable"):
            adapter.frame(*window, metrics=["busy"], node_series={})
        assert calls.count("busy") == 2
        with pytest.raises(TelemetryQueryError, match="refused query"):
            adapter.frame(*window, metrics=["bad{"], node_series={})
        with pytest.raises(TelemetryTimeout, match=r"within 0\.3s"):
            adapter.frame(*window, metrics=["slow"], node_series={})
        frame = adapter.frame(*window, metrics=["DCGM_FI_DEV_GPU_TEMP"], node_series={})
    # NaN and non-numeric samples become NaN cells; the series without a usable gpu label is skipped.
    assert frame.gpus.hostname == ("n1",) and frame.gpus.pod == ("p1",) and frame.gpus.namespace == ("ml",)
    np.testing.assert_array_equal(frame.metrics["DCGM_FI_DEV_GPU_TEMP"], [[61.0, np.nan, np.nan]])
    assert len(adapter.skipped) == 1 and "gpu" in adapter.skipped[0]
