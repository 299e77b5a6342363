"""Wirings for worker processes started by the tests and the benchmark (`--wiring tests.worker_wiring:...`):
the standard container with synthetic fleet telemetry around the current wall-clock time."""

from __future__ import annotations

import os
import time

import numpy as np

from connectors.telemetry.fake import InMemoryTelemetry
from gpuops.config import Settings
from gpuops.wiring import Container, bootstrap
from tests.unit import det_synth


def synthetic_telemetry(nodes: int, gpus_per_node: int = 8, step_s: float = 15.0, hours: float = 2.0,
                        lost_rows: tuple[int, ...] = (), start: float | None = None,
                        lost_before_s: float = 0.0) -> InMemoryTelemetry:
    """A healthy fleet from an hour before `start` (default now) for `hours`; `lost_rows` stop reporting
    `lost_before_s` before `start` (the detectors open a gpu_lost incident for each)."""
    steps = int(hours * 3600 / step_s)
    ts, met, gpus, node_names, nm = det_synth.healthy(nodes=nodes, gpus_per_node=gpus_per_node, steps=steps,
                                                      step_s=step_s)
    origin = (start if start is not None else time.time()) - 3600.0
    ts = ts - ts[0] + origin
    onset = int((3600 - lost_before_s) / step_s)
    for row in lost_rows:
        for arr in met.values():
            arr[row, onset:] = np.nan
    return InMemoryTelemetry(det_synth.frame(ts, met, gpus, node_names, nm), lookback_s=2 * step_s)


def synthetic(settings: Settings) -> Container:
    """GPUOPS_TEST_NODES nodes (default 4) of 8 GPUs; GPU row 12 (gpu-node-002 GPU 4) was lost 5 minutes ago."""
    from runbooks import RunbookSettings

    nodes = int(os.environ.get("GPUOPS_TEST_NODES", "4"))
    return bootstrap(settings, telemetry=synthetic_telemetry(nodes, step_s=settings.step_seconds, lost_rows=(12,),
                                                          lost_before_s=300),
                     runbook_settings=RunbookSettings(poll_interval_s=0.5, evict_retry_interval_s=0.5))


def quick_runbooks(settings: Settings) -> Container:
    """The standard wiring with runbooks that re-read the cluster every half second (drains end sooner)."""
    from runbooks import RunbookSettings

    return bootstrap(settings, runbook_settings=RunbookSettings(poll_interval_s=0.5, evict_retry_interval_s=0.5))
