"""A degrading link is handed to the planner before it fails: on the twin, the default detection cycle's climb
of an NVLink's CRC errors, or of a PCIe link's replays, opens an incident on its GPU's node through the
production incident service half an hour or more before the link fails, and a healthy node of the same fleet stays
quiet."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from detectors import metrics as m
from detectors.evaluation import _ts
from detectors.pipeline import DetectionCycle
from domain import clock
from gpuops.incidents.service import ingest_findings
from gpuops.store.models import Incident
from gpuops.wiring import Container
from simulator.recording import cycle_frames
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin


@pytest.mark.parametrize(("fault", "family", "metric"), [
    ({"kind": "nvlink_degradation"}, "nvlink", m.NVLINK_CRC_FLIT_ERRORS),
    ({"kind": "pcie_replay_storm", "fall_off": True}, "pcie", m.PCIE_REPLAY_COUNTER),  # ends off the bus
])
def test_a_degrading_link_opens_an_incident_well_before_it_fails(container: Container, fault: dict[str, object],
                                                                     family: str, metric: str) -> None:
    twin = Twin(scenario_from_dict({
        "name": "climb", "seed": 23, "fleet": {"nodes": 3, "gpus_per_node": 8}, "duration": "5h", "step": "30s",
        "workloads": [{"type": "training", "name": "train", "nodes": 3}],
        "faults": [{"node": "gpu-node-002", "gpu": 5, "at": "30m", "lead": "4h", **fault}],
    }))
    cycle = DetectionCycle()
    with clock.using(lambda: twin.t):
        for frame in cycle_frames(twin, 8):
            found = cycle.update(frame)
            if found:
                with container.uow() as uow:
                    ingest_findings(uow.session, found, fleet_nodes=twin.n_nodes)
                    uow.commit()
    (truth,) = twin.truth()["faults"]
    with container.uow() as uow:
        (incident,) = uow.session.scalars(select(Incident))
        first = min(incident.findings, key=lambda f: (f.ts, f.id))
        opened = (incident.hostname, first.kind, first.detector, incident.opened_at.replace(tzinfo=UTC))
    # opened by the climb (a GPU that later falls off the bus renames it, as the harder signal)
    assert opened[:3] == ("gpu-node-002", family, f"climb.{metric}")
    assert (datetime.fromtimestamp(_ts(truth["failure_at"]), tz=UTC) - opened[3]).total_seconds() > 1800
