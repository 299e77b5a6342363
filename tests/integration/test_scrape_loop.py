"""The direct-scrape loop feeds the telemetry source from a real exporter endpoint (the twin over HTTP) while
detection cycles read frames from it; a failing exporter is retried, never fatal."""

from __future__ import annotations

import threading
import time

from detectors.frame import FleetFrame
from gpuops.scraping import ScrapeLoop, SharedScrapeTelemetry
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin
from tests.sim_server import serving
from tests.waiting import wait_for

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

        def scraped_five() -> bool:
            twin.step()
            return loop.scrapes >= 5

        try:
            wait_for(scraped_five, timeout=20, message=lambda: f"only {loop.scrapes} scrapes")
        finally:
            reader.join(timeout=30)
            loop.stop()
        assert not errors

        # The frame's grid is whole seconds: poll until one grid point lies after the scrapes.
        def filled_frame() -> FleetFrame | None:
            frame = source.frame(time.time() - 30, time.time(), 1.0)
            return frame if frame.n_gpus else None

        frame = wait_for(filled_frame, timeout=5, interval=0.1, message="the frame holds no GPUs")
        assert frame.n_gpus == 8 and "DCGM_FI_DEV_GPU_TEMP" in frame.metrics
        source.close()


def test_a_dead_exporter_is_retried_not_fatal() -> None:
    source = SharedScrapeTelemetry(["http://127.0.0.1:9/metrics"], timeout_s=0.5)
    loop = ScrapeLoop(source, interval_s=0.05).start()
    wait_for(lambda: loop.failures >= 3, timeout=10, message=lambda: f"only {loop.failures} failed scrapes")
    assert loop.scrapes == 0 and loop._thread.is_alive()
    loop.stop()
    assert not loop._thread.is_alive()
    source.close()
