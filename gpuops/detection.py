"""One detection cycle as a service: pull the window's FleetFrame, run the streaming detectors of a shard,
turn findings into incidents, and store the detectors' state, all in one transaction that locks the
shard's state row (so two schedulers never run the same cycle twice)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connectors.telemetry.port import TelemetrySource
from detectors.findings import Finding
from detectors.pipeline import DetectionCycle
from gpuops.cost.recording import UsageSettings, record_usage
from gpuops.incidents.service import IncidentConfig, IngestResult, ingest_findings
from gpuops.store.models import DetectorState
from gpuops.store.uow import UnitOfWork

log = logging.getLogger(__name__)


def shard_of(hostname: str, shards: int) -> int:
    """Stable node → shard assignment (crc32, the same in every process and Python version)."""
    return zlib.crc32(hostname.encode()) % shards


@dataclass
class CycleOutcome:
    shard: str
    ran: bool
    end: float
    findings: list[Finding] = field(default_factory=list)
    incidents: IngestResult | None = None
    reason: str = ""


def _locked_state(session: Session, shard: str) -> DetectorState:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(DetectorState).values(shard=shard, last_ts=0.0, cycles=0)
                    .on_conflict_do_nothing(index_elements=["shard"]))
    return session.execute(select(DetectorState).where(DetectorState.shard == shard).with_for_update()).scalar_one()


def shard_name(shard: int, shards: int) -> str:
    return f"{shard}/{shards}"


def examined_until(session: Session, shards: int) -> float | None:
    """The data time up to which every shard's detection has run (unix seconds): the oldest of the shards'
    last cycles, or None while a shard has never run. Anything wrong in the fleet before this time has been
    seen, so the agent's soak measures telemetry examined rather than wall-clock time."""
    names = [shard_name(i, shards) for i in range(shards)]
    rows = list(session.scalars(select(DetectorState.last_ts).where(DetectorState.shard.in_(names))))
    if len(rows) < shards or min(rows) <= 0:
        return None
    return float(min(rows))


LiveCycles = dict[str, tuple[int, DetectionCycle]]


def run_cycle(uow_factory: Callable[[], UnitOfWork], *, telemetry: TelemetrySource, end: float, step_s: float,
              window_s: float, shard: int = 0, shards: int = 1,
              incident_config: IncidentConfig | None = None,
              new_cycle: Callable[[], DetectionCycle] = DetectionCycle,
              live: LiveCycles | None = None, usage: UsageSettings | None = None) -> CycleOutcome:
    """Run the cycle ending at `end` (unix seconds) for one shard. A cycle already run is skipped.
    `new_cycle` builds the detectors of a shard's first cycle (the container's adds the risk model). `live`
    keeps this process's detectors between cycles: when no other process ran the shard since (the stored
    count of cycles is the one this process wrote), they go on without being restored from the store. With `usage`,
    the cycle also records the shard's GPU allocation and utilisation for the cost view (gpuops.cost)."""
    name = shard_name(shard, shards)
    with uow_factory() as uow:
        row = _locked_state(uow.session, name)
        if end <= row.last_ts:
            return CycleOutcome(name, False, end, reason=f"already ran up to {row.last_ts}")
        kept = live.pop(name, None) if live is not None else None  # gone unless this cycle commits
        if kept is not None and kept[0] == row.cycles:
            cycle = kept[1]
        else:
            cycle = DetectionCycle.from_state(row.state) if row.state else new_cycle()
        start = end - window_s if row.last_ts <= 0 else max(end - window_s, row.last_ts - step_s)
        frame = telemetry.frame(start, end, step_s)
        fleet_nodes = len(set(frame.gpus.hostname)) or len(frame.nodes)
        if shards > 1:
            keep = np.array([shard_of(h, shards) == shard for h in frame.gpus.hostname], dtype=bool)
            frame = frame.rows(keep)
        findings = cycle.update(frame) if frame.n_steps else []
        if usage is not None:
            record_usage(uow.session, frame, usage, owns=lambda host: shard_of(host, shards) == shard)
        result = ingest_findings(uow.session, findings, fleet_nodes=max(fleet_nodes, 1), config=incident_config)
        row.state = cycle.state_bytes()
        row.last_ts = end
        row.cycles += 1
        uow.commit()
        if live is not None:
            live[name] = (row.cycles, cycle)
    # INFO tells the story (a cycle that found something); a quiet cycle is chatter, at DEBUG.
    log.log(logging.INFO if findings or result.opened or result.fleet else logging.DEBUG, "detection cycle",
            extra={"shard": name, "findings": len(findings), "opened": result.opened, "fleet": result.fleet})
    return CycleOutcome(name, True, end, findings, result)
