"""What a detection cycle records for the cost view, in the cycle's own transaction: each GPU's track
(gpu_usage) and each deployment's GPU-seconds provisioned and busy per UTC day (gpu_hours, added with an upsert so
shards on several workers never lose each other's counts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from detectors.frame import FleetFrame
from gpuops.cost.tracking import (
    UNKNOWN,
    FloatArray,
    GpuTrack,
    Tracks,
    advance_all,
    busy_seconds,
    unseen,
    utilisation,
    workload_of,
)
from gpuops.store.models import GpuHours, GpuUsage, utcnow


@dataclass(frozen=True)
class UsageSettings:
    """How the cost view reads utilisation: under `threshold_percent` a bound GPU is low; a gap in its samples
    longer than `max_gap_s` breaks a low run; each sample stands for `step_s` seconds."""

    threshold_percent: float
    step_s: float
    max_gap_s: float


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _stored(session: Session, owns: Callable[[str], bool]) -> dict[tuple[str, int], GpuTrack]:
    rows = session.execute(select(GpuUsage.hostname, GpuUsage.gpu, GpuUsage.pod, GpuUsage.namespace, GpuUsage.state,
                                  GpuUsage.low_since, GpuUsage.seen_at))
    return {(host, gpu): GpuTrack(pod, namespace, state, None if since is None else since.timestamp(),
                                  seen.timestamp())
            for host, gpu, pod, namespace, state, since, seen in rows if owns(host)}


def record_usage(session: Session, frame: FleetFrame, settings: UsageSettings,
                 owns: Callable[[str], bool] = lambda _host: True) -> int:
    """Advance every GPU of `frame` and add its deployments' GPU-seconds; a GPU stored for a node this cycle owns
    (`owns`: its shard) but absent from the frame becomes unknown. Returns the GPUs updated."""
    if frame.n_steps == 0:
        return 0
    stored = _stored(session, owns)
    keys = [frame.gpus.key(i) for i in range(frame.n_gpus)]
    previous = Tracks.of([stored.pop(key, None) for key in keys])
    util = utilisation(frame)
    tracks = advance_all(previous, pods=frame.gpus.pod, namespaces=frame.gpus.namespace,
                         timestamps=frame.timestamps, util=util, threshold=settings.threshold_percent,
                         max_gap_s=settings.max_gap_s)
    _add_hours(session, _hours(frame, util, previous.seen_at, settings.step_s))
    now = utcnow()
    known = np.isfinite(previous.seen_at)
    changed = np.flatnonzero(tracks.seen_at > previous.seen_at).tolist()
    rows = {i: _row(keys[i], tracks.row(i), frame.gpus.model_name[i], now) for i in changed}
    updates = [rows[i] for i in changed if known[i]]
    inserts = [rows[i] for i in changed if not known[i]]
    if updates:
        session.execute(update(GpuUsage), updates)
    if inserts:
        session.execute(insert(GpuUsage), inserts)
    last = float(frame.timestamps[-1])
    gone = [_row(key, unseen(track, last), None, now) for key, track in stored.items() if track.state != UNKNOWN]
    if gone:  # stored, owned, and not in this frame
        session.execute(update(GpuUsage), gone)
    return len(changed)


def _row(key: tuple[str, int], track: GpuTrack, model_name: str | None, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hostname": key[0], "gpu": key[1], "pod": track.pod, "namespace": track.namespace,
        "deployment": workload_of(track.pod) if track.pod else "", "state": track.state,
        "low_since": None if track.low_since is None else _dt(track.low_since), "seen_at": _dt(track.seen_at),
        "updated_at": now}
    if model_name is not None:
        row["model_name"] = model_name
    return row


def _hours(frame: FleetFrame, util: FloatArray, after: FloatArray, step_s: float
           ) -> dict[tuple[str, str, str], list[float]]:
    """GPU-seconds (provisioned, busy) per (UTC day, namespace, deployment) of the GPUs with a pod bound."""
    bound = [i for i, pod in enumerate(frame.gpus.pod) if pod]
    hours: dict[tuple[str, str, str], list[float]] = {}
    if not bound:
        return hours
    per_day = busy_seconds(frame.timestamps, util[bound], after=after[bound], step_s=step_s)
    for day, (provisioned, busy) in per_day.items():
        name = _day(day)
        for j, i in enumerate(bound):
            if provisioned[j] <= 0:
                continue
            sums = hours.setdefault((name, frame.gpus.namespace[i], workload_of(frame.gpus.pod[i])), [0.0, 0.0])
            sums[0] += float(provisioned[j])
            sums[1] += float(busy[j])
    return hours


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, tz=UTC).strftime("%Y-%m-%d")


def _add_hours(session: Session, hours: dict[tuple[str, str, str], list[float]]) -> None:
    if not hours:
        return
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for (day, namespace, deployment), (provisioned, busy) in sorted(hours.items()):
        stmt = upsert(GpuHours).values(day=day, namespace=namespace, deployment=deployment,
                                       provisioned_s=provisioned, busy_s=busy)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["day", "namespace", "deployment"],
            set_={"provisioned_s": GpuHours.provisioned_s + stmt.excluded.provisioned_s,
                  "busy_s": GpuHours.busy_s + stmt.excluded.busy_s}))
