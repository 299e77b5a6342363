"""The detection cycle as a service: telemetry → detectors → incidents, state carried between cycles in the store,
a cycle already run is a no-op (two schedulers), shards split the fleet by node hash."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from connectors.telemetry.errors import TelemetryUnavailable
from connectors.telemetry.fake import InMemoryTelemetry
from detectors import metrics as m
from gpuops.detection import run_cycle, shard_of
from gpuops.store.models import DetectorState, Incident
from gpuops.wiring import Container
from tests.unit import det_synth


def _telemetry(lost_row: int | None = None, at_step: int = 150) -> InMemoryTelemetry:
    ts, met, gpus, nodes, nm = det_synth.healthy(nodes=4, gpus_per_node=8, steps=240, step_s=30.0)
    if lost_row is not None:
        for arr in met.values():
            arr[lost_row, at_step:] = np.nan
    return InMemoryTelemetry(det_synth.frame(ts, met, gpus, nodes, nm), lookback_s=30.0)


def _incidents(container: Container) -> list[Incident]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(Incident)))


def test_cycles_open_an_incident_for_a_lost_gpu_and_carry_state(container: Container) -> None:
    telemetry = _telemetry(lost_row=12)  # gpu-node-002 GPU 4
    t0 = float(telemetry.data.timestamps[0])
    ends = [t0 + 30.0 * k for k in range(30, 200, 10)]
    for end in ends:
        outcome = run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0)
        assert outcome.ran
    lost = [i for i in _incidents(container) if i.family == "gpu_lost"]
    assert [(i.hostname, i.gpu, i.status) for i in lost] == [("gpu-node-002", 4, "open")]
    with container.uow() as uow:
        state = uow.session.get(DetectorState, "0/1")
        assert state is not None and state.cycles == len(ends) and state.last_ts == ends[-1]
    # Later cycles read only from their last data time on (the state was restored, not rebuilt).
    assert telemetry.calls[1][0] == ends[0] - 30.0


def test_the_same_cycle_twice_runs_once(container: Container) -> None:
    telemetry = _telemetry()
    end = float(telemetry.data.timestamps[100])
    first = run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0)
    second = run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0)
    assert first.ran and not second.ran and "already ran" in second.reason
    assert len(telemetry.calls) == 1


def test_shards_split_the_fleet_by_node() -> None:
    hosts = [f"gpu-node-{i:03d}" for i in range(1, 201)]
    counts = np.bincount([shard_of(h, 4) for h in hosts], minlength=4)
    assert counts.sum() == 200 and counts.min() > 25  # every shard gets a fair part
    assert all(shard_of(h, 4) == shard_of(h, 4) for h in hosts)


def test_each_shard_sees_only_its_nodes(container: Container) -> None:
    telemetry = _telemetry(lost_row=12)
    t0 = float(telemetry.data.timestamps[0])
    opened: dict[int, set[str]] = {}
    for shard in range(2):
        for end in [t0 + 30.0 * k for k in range(30, 200, 10)]:
            outcome = run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0,
                                shard=shard, shards=2)
            opened.setdefault(shard, set()).update(f.hostname for f in outcome.findings)
    for shard, hosts in opened.items():
        assert all(shard_of(h, 2) == shard for h in hosts)
    assert [i.hostname for i in _incidents(container) if i.family == "gpu_lost"] == ["gpu-node-002"]


def test_telemetry_outage_fails_loudly_and_loses_no_state(container: Container) -> None:
    telemetry = _telemetry()
    end = float(telemetry.data.timestamps[100])
    run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0)
    telemetry.fail_with = TelemetryUnavailable("prometheus did not answer")
    with pytest.raises(TelemetryUnavailable):
        run_cycle(container.uow, telemetry=telemetry, end=end + 300, step_s=30.0, window_s=900.0)
    with container.uow() as uow:
        state = uow.session.get(DetectorState, "0/1")
        assert state is not None and state.last_ts == end and state.cycles == 1
    telemetry.fail_with = None
    assert run_cycle(container.uow, telemetry=telemetry, end=end + 300, step_s=30.0, window_s=900.0).ran
    assert m.GPU_TEMP in telemetry.data.metrics


def test_a_process_keeps_its_detectors_between_cycles_only_while_no_other_ran_the_shard(
        container: Container) -> None:
    telemetry = _telemetry(lost_row=12)
    t0 = float(telemetry.data.timestamps[0])
    ends = [t0 + 30.0 * k for k in range(30, 200, 10)]
    mine: dict[str, Any] = {}
    for end in ends[:6]:
        run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0, live=mine)
    kept = mine["0/1"][1]
    run_cycle(container.uow, telemetry=telemetry, end=ends[6], step_s=30.0, window_s=900.0, live=mine)
    assert mine["0/1"][1] is kept  # nobody else ran the shard: the same detectors went on
    run_cycle(container.uow, telemetry=telemetry, end=ends[7], step_s=30.0, window_s=900.0, live={})  # another
    for end in ends[8:]:
        run_cycle(container.uow, telemetry=telemetry, end=end, step_s=30.0, window_s=900.0, live=mine)
    assert mine["0/1"][1] is not kept  # restored from the store after the other process's cycle
    lost = [i for i in _incidents(container) if i.family == "gpu_lost"]
    assert [(i.hostname, i.gpu) for i in lost] == [("gpu-node-002", 4)]  # as without kept detectors
