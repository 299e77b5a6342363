"""The benchmark workers' wiring: the standard container with a synthetic fleet of GPUOPS_BENCH_NODES nodes
(8 GPUs each) whose data covers the accelerated run starting at data time GPUOPS_BENCH_START."""

from __future__ import annotations

import os

from gpuops.config import Settings
from gpuops.wiring import Container, bootstrap
from tests.worker_wiring import synthetic_telemetry

RUN_S = 1800.0


def fleet(settings: Settings) -> Container:
    nodes = int(os.environ["GPUOPS_BENCH_NODES"])
    run_start = float(os.environ["GPUOPS_BENCH_START"])
    # data from one window before the run to a little after it; two GPUs fall off the bus 10 minutes in
    telemetry = synthetic_telemetry(nodes, step_s=settings.step_seconds, hours=(RUN_S + 2 * settings.window_seconds
                                                                                + 600) / 3600,
                                    start=run_start + 3600 - settings.window_seconds - 300,
                                    lost_rows=(12, nodes * 4), lost_before_s=3600 - settings.window_seconds - 300 - 600)
    return bootstrap(settings, telemetry=telemetry)
