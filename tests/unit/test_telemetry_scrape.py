"""The direct-scrape adapter and the frame assembler: label spellings, staleness, bad input, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connectors.telemetry import (
    FrameAssembler,
    InMemoryTelemetry,
    RawSeries,
    ScrapeTelemetry,
    TelemetryBadResponse,
    TelemetryError,
    TelemetryUnavailable,
    time_grid,
)
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin
from tests.prometheus_server import free_port
from tests.sim_server import serving

T0 = 1_700_000_000.0
MODEL = "NVIDIA H100 80GB HBM3"


def expo(temp: str = "60", extra: str = "") -> str:
    return (
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-a",modelName="{MODEL}",Hostname="n1"}} {temp}\n'
        f'DCGM_FI_DEV_GPU_TEMP{{gpu="1",UUID="GPU-b",modelName="{MODEL}",Hostname="n1"}} 50\n'
        f"{extra}"
    )


def test_hostname_spellings_and_exported_renames_give_one_index() -> None:
    grid = time_grid(T0, T0 + 30, 15)
    values = np.array([1.0, 2.0, 3.0])
    series = {
        "M": [
            RawSeries({"Hostname": "b", "gpu": "0", "pod": "p"}, values),
            RawSeries(
                {
                    "hostname": "a",
                    "gpu": "1",
                    "exported_pod": "real",
                    "pod": "exporter-x",
                    "exported_namespace": "ml",
                    "namespace": "gpu-operator",
                },
                values * 2,
            ),
            RawSeries({"hostname": "a", "gpu": "0"}, values * 3),
        ]
    }
    frame = FrameAssembler(grid).build(series)
    assert frame.gpus.hostname == ("a", "a", "b") and frame.gpus.gpu == (0, 1, 0)
    assert frame.gpus.pod == ("", "real", "p") and frame.gpus.namespace == ("", "ml", "")
    np.testing.assert_array_equal(frame.metrics["M"][1], values * 2)


def test_pod_change_merges_into_one_row_and_xid_counts_add_up() -> None:
    grid = time_grid(T0, T0 + 45, 15)
    nan = np.nan
    old = RawSeries({"Hostname": "n", "gpu": "0", "pod": "old"}, np.array([1.0, 1.0, nan, nan]))
    new = RawSeries({"Hostname": "n", "gpu": "0", "pod": "new"}, np.array([nan, 2.0, 2.0, 2.0]))
    xid_none = RawSeries({"Hostname": "n", "gpu": "0"}, np.array([0.0, nan, nan, nan]))
    xid_48 = RawSeries({"Hostname": "n", "gpu": "0", "xid": "48"}, np.array([nan, 1.0, 1.0, nan]))
    xid_63 = RawSeries({"Hostname": "n", "gpu": "0", "xid": "63"}, np.array([nan, 2.0, nan, nan]))
    frame = FrameAssembler(grid).build(
        {"M": [old, new], "DCGM_EXP_XID_ERRORS_COUNT": [xid_none, xid_48, xid_63]}
    )
    assert frame.n_gpus == 1 and frame.gpus.pod == ("new",)
    np.testing.assert_array_equal(frame.metrics["M"][0], [1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(frame.metrics["DCGM_EXP_XID_ERRORS_COUNT"][0], [0.0, 3.0, 1.0, nan])


def test_bad_grid_is_refused() -> None:
    for args in ((T0, T0 - 1, 15), (T0, T0 + 1, 0), (T0, float("nan"), 15)):
        with pytest.raises(ValueError):
            time_grid(*args)


def test_malformed_family_is_reported_and_the_rest_kept() -> None:
    scraper = ScrapeTelemetry(["x"])
    bad = '# HELP BROKEN x\n# TYPE BROKEN gauge\nBROKEN{gpu="0" 1\n'
    kept = scraper.ingest(expo(extra=bad), "x", T0)
    assert kept == 2 and len(scraper.problems) == 1 and "BROKEN" in scraper.problems[0]
    frame = scraper.frame(T0, T0, 15, metrics=["DCGM_FI_DEV_GPU_TEMP"], node_series={})
    np.testing.assert_array_equal(frame.metrics["DCGM_FI_DEV_GPU_TEMP"][:, 0], [60.0, 50.0])


def test_nan_sample_is_a_nan_cell() -> None:
    scraper = ScrapeTelemetry(["x"])
    scraper.ingest(expo(temp="NaN"), "x", T0)
    frame = scraper.frame(T0, T0, 15, metrics=["DCGM_FI_DEV_GPU_TEMP"], node_series={})
    assert (
        np.isnan(frame.metrics["DCGM_FI_DEV_GPU_TEMP"][0, 0])
        and frame.metrics["DCGM_FI_DEV_GPU_TEMP"][1, 0] == 50
    )


def test_vanished_series_goes_stale_and_window_is_bounded() -> None:
    scraper = ScrapeTelemetry(["x"], window_s=60)
    scraper.ingest(expo(), "x", T0)
    one_gpu = "".join(line + "\n" for line in expo().splitlines() if 'gpu="1"' not in line)
    scraper.ingest(one_gpu, "x", T0 + 15)
    frame = scraper.frame(T0, T0 + 30, 15, metrics=["DCGM_FI_DEV_GPU_TEMP"], node_series={})
    np.testing.assert_array_equal(frame.metrics["DCGM_FI_DEV_GPU_TEMP"][1], [50.0, np.nan, np.nan])
    for i in range(2, 12):
        scraper.ingest(one_gpu, "x", T0 + 15 * i)
    frame = scraper.frame(T0, T0 + 165, 15, metrics=["DCGM_FI_DEV_GPU_TEMP"], node_series={})
    assert frame.n_gpus == 1
    assert np.isnan(frame.metrics["DCGM_FI_DEV_GPU_TEMP"][0, :6]).all()
    assert np.isfinite(frame.metrics["DCGM_FI_DEV_GPU_TEMP"][0, 7:]).all()


def test_absent_optional_metric_degrades() -> None:
    scraper = ScrapeTelemetry(["x"])
    scraper.ingest(expo(), "x", T0)
    frame = scraper.frame(T0, T0, 15)
    assert "DCGM_FI_DEV_GPU_TEMP" in frame.metrics and frame.metric("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") is None
    assert frame.nodes == ()


def test_scrapes_the_running_twin_over_http() -> None:
    twin = Twin(
        scenario_from_dict({"name": "s", "fleet": {"nodes": 2, "gpus_per_node": 2}, "duration": "1h"})
    )
    twin.step()
    clock = [T0]
    with serving(build_app(twin)) as url:
        scraper = ScrapeTelemetry([f"{url}/metrics"], clock=lambda: clock[0])
        for i in range(3):
            clock[0] = T0 + 15 * i
            twin.step()
            assert scraper.scrape() > 0
    frame = scraper.frame(T0, T0 + 30, 15)
    assert frame.n_gpus == 4 and frame.nodes == ("gpu-node-001", "gpu-node-002")
    assert np.isfinite(frame.metrics["DCGM_FI_DEV_POWER_USAGE"]).all()
    ready = 'kube_node_status_condition{condition="Ready",status="true"}'
    assert np.all(frame.node_metrics[ready] == 1)


def test_unreachable_or_failing_exporter_is_a_clear_error() -> None:
    async def broken(request: Request) -> Response:
        return PlainTextResponse("boom", status_code=500)

    down = ScrapeTelemetry([f"http://127.0.0.1:{free_port()}/metrics"], timeout_s=1)
    with pytest.raises(TelemetryUnavailable, match="cannot scrape"):
        down.scrape()
    with serving(Starlette(routes=[Route("/metrics", broken)])) as url:
        failing = ScrapeTelemetry([f"{url}/metrics"])
        with pytest.raises(TelemetryBadResponse, match="HTTP 500"):
            failing.scrape()


def test_in_memory_fake_cuts_windows_and_fails_on_demand() -> None:
    scraper = ScrapeTelemetry(["x"])
    for i in range(4):
        scraper.ingest(expo(temp=str(60 + i)), "x", T0 + 15 * i)
    fake = InMemoryTelemetry(scraper.frame(T0, T0 + 45, 15, node_series={}))
    window = fake.frame(T0 + 30, T0 + 45, 15)
    np.testing.assert_array_equal(window.metrics["DCGM_FI_DEV_GPU_TEMP"][0], [62.0, 63.0])
    fake.fail_with = TelemetryUnavailable("down")
    with pytest.raises(TelemetryError):
        fake.frame(T0, T0 + 15, 15)
