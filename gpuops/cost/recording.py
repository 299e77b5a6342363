"""What a detection cycle records for the cost view, in the cycle's own transaction: each GPU's track
(gpu_usage) and each deployment's GPU-seconds provisioned and busy per UTC day (gpu_hours, added with an upsert so
shards on several workers never lose each other's counts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from detectors.frame import FleetFrame
from gpuops.cost.tracking import GpuTrack, advance, busy_seconds, unseen, utilisation, workload_of
from gpuops.store.models import GpuHours, GpuUsage


@dataclass(frozen=True)
class UsageSettings:
    """How the cost view reads utilisation: under `threshold_percent` a bound GPU is low; a gap in its samples
    longer than `max_gap_s` breaks a low run; each sample stands for `step_s` seconds."""

    threshold_percent: float
    step_s: float
    max_gap_s: float


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _track(row: GpuUsage) -> GpuTrack:
    return GpuTrack(row.pod, row.namespace, row.state,
                    None if row.low_since is None else row.low_since.timestamp(), row.seen_at.timestamp())


def record_usage(session: Session, frame: FleetFrame, settings: UsageSettings,
                 owns: Callable[[str], bool] = lambda _host: True) -> int:
    """Advance every GPU of `frame` and add its deployments' GPU-seconds; a GPU stored for a node this cycle owns
    (`owns`: its shard) but absent from the frame becomes unknown. Returns the GPUs updated."""
    if frame.n_steps == 0:
        return 0
    rows = {(r.hostname, r.gpu): r for r in session.scalars(select(GpuUsage))
            if owns(r.hostname)}
    util = utilisation(frame)
    hours: dict[tuple[str, str, str], list[float]] = {}
    for i in range(frame.n_gpus):
        key = frame.gpus.key(i)
        pod, namespace = frame.gpus.pod[i], frame.gpus.namespace[i]
        row = rows.pop(key, None)
        previous = _track(row) if row is not None else None
        track = advance(previous, pod=pod, namespace=namespace, timestamps=frame.timestamps, util=util[i],
                        threshold=settings.threshold_percent, max_gap_s=settings.max_gap_s)
        if pod:
            after = previous.seen_at if previous is not None else float("-inf")
            for day, (provisioned, busy) in busy_seconds(frame.timestamps, util[i], after=after,
                                                         step_s=settings.step_s).items():
                sums = hours.setdefault((_day(day), namespace, workload_of(pod)), [0.0, 0.0])
                sums[0] += provisioned
                sums[1] += busy
        if track is previous or not np.isfinite(track.seen_at):
            continue
        if row is None:
            row = GpuUsage(hostname=key[0], gpu=key[1])
            session.add(row)
        _write(row, track, model_name=frame.gpus.model_name[i])
    last = float(frame.timestamps[-1])
    for row in rows.values():  # stored, owned, and not in this frame
        if row.state != "unknown":
            _write(row, unseen(_track(row), last), model_name=row.model_name)
    _add_hours(session, hours)
    return frame.n_gpus


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, tz=UTC).strftime("%Y-%m-%d")


def _write(row: GpuUsage, track: GpuTrack, *, model_name: str) -> None:
    row.model_name = model_name
    row.pod, row.namespace = track.pod, track.namespace
    row.deployment = workload_of(track.pod) if track.pod else ""
    row.state = track.state
    row.low_since = None if track.low_since is None else _dt(track.low_since)
    row.seen_at = _dt(track.seen_at)


def _add_hours(session: Session, hours: dict[tuple[str, str, str], list[float]]) -> None:
    if not hours:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for (day, namespace, deployment), (provisioned, busy) in sorted(hours.items()):
        stmt = insert(GpuHours).values(day=day, namespace=namespace, deployment=deployment,
                                       provisioned_s=provisioned, busy_s=busy)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["day", "namespace", "deployment"],
            set_={"provisioned_s": GpuHours.provisioned_s + stmt.excluded.provisioned_s,
                  "busy_s": GpuHours.busy_s + stmt.excluded.busy_s}))
