"""The direct-scrape loop feeds the telemetry source from a real exporter endpoint (the twin over HTTP) while
detection cycles read frames from it; a failing exporter is retried, never fatal."""

from __future__ import annotations

import threading
import time

from gpuops.scraping import ScrapeLoop, SharedScrapeTelemetry
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin
from tests.sim_server import serving

SCENARIO = scenario_from_dict({"name": "scrape", "seed": 3, "fleet": {"nodes": 2, "gpus_per_node": 4,
                               "gpu_model": "H100 80GB"}, "duration": "1h", "step": "15s", "faults": [],
                               "approval": "auto_approve"})


def test_the_loop_fills_the_window_while_frames_are_read() -> None:
    twin = Twin(SCENARIO)
    with serving(build_app(twin, with_kubernetes=False)) as url:
        source = SharedScrapeTelemetry([f"{url}/metrics"], window_s=600.0)
        loop = ScrapeLoop(source, interval_s=0.05).start()
        errors: list[BaseException] = []

        def read_frames() -> None:
            try:
                for _ in range(50):
                    now = time.time()
                    source.frame(now - 5, now, 1.0)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        reader = threading.Thread(target=read_frames)
        reader.start()
        deadline = time.monotonic() + 20
        while loop.scrapes < 5 and time.monotonic() < deadline:
            twin.step()
            time.sleep(0.05)
        reader.join(timeout=30)
        loop.stop()
        assert not errors
        assert loop.scrapes >= 5
        # The frame's grid is whole seconds: poll until one grid point lies after the scrapes.
        deadline = time.monotonic() + 5
        frame = source.frame(time.time() - 30, time.time(), 1.0)
        while frame.n_gpus == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            frame = source.frame(time.time() - 30, time.time(), 1.0)
        assert frame.n_gpus == 8 and "DCGM_FI_DEV_GPU_TEMP" in frame.metrics
        source.close()


def test_a_dead_exporter_is_retried_not_fatal() -> None:
    source = SharedScrapeTelemetry(["http://127.0.0.1:9/metrics"], timeout_s=0.5)
    loop = ScrapeLoop(source, interval_s=0.05).start()
    deadline = time.monotonic() + 10
    while loop.failures < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop.failures >= 3 and loop.scrapes == 0 and loop._thread.is_alive()
    loop.stop()
    assert not loop._thread.is_alive()
    source.close()
