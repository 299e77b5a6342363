"""`gpuops backtest`: replay a range stored in Prometheus through the detectors, cycle by cycle, and, with
`--incidents-out`, through the production incident service (dedup, persistence, corroboration, fleet
correlation) in a scratch database, to write the incidents a user would have been paged with."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from connectors.telemetry.errors import TelemetryError
from connectors.telemetry.prometheus import PrometheusTelemetry
from detectors.findings import Finding
from detectors.pipeline import DetectionCycle
from domain import IncidentStatus
from entrypoints.commands.context import echo_json
from gpuops.incidents.service import ingest_findings
from gpuops.store import migrate
from gpuops.store.db import make_engine, make_session_factory
from gpuops.store.models import FindingRecord, Incident
from gpuops.store.uow import UnitOfWork
from simulator.durations import parse_duration


def _iso(value: str, name: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise click.BadParameter(f"expected an ISO 8601 time such as 2026-05-01T00:00:00Z, got {value!r}",
                                 param_hint=name) from exc


def _duration(value: str, name: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:  # a ScenarioError is one too
        raise click.BadParameter(str(exc), param_hint=name) from exc


@click.command("backtest")
@click.option("--prometheus-url", required=True, help="Prometheus holding dcgm-exporter and kube-state-metrics data.")
@click.option("--start", required=True, help="First data time (ISO 8601, UTC).")
@click.option("--end", required=True, help="Last data time (ISO 8601, UTC).")
@click.option("--step", default="15s", show_default=True, help="Sample step (the scrape interval).")
@click.option("--cycle", default="60s", show_default=True, help="Data time each detection cycle advances.")
@click.option("--window", default="15m", show_default=True, help="History the first cycle reads.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Findings as JSON lines.")
@click.option("--incidents-out", "incidents_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also run the findings through the incident service and write the incidents a user would be "
                   "paged with, as JSON lines.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per Prometheus query.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def backtest(prometheus_url: str, start: str, end: str, step: str, cycle: str, window: str, out_path: Path,
             incidents_path: Path | None, timeout: float, as_json: bool) -> None:
    """Replay [START, END] through the detectors as the daemon would have seen it, and write the findings."""
    t0, t1 = _iso(start, "--start"), _iso(end, "--end")
    step_s, cycle_s, window_s = (_duration(step, "--step"), _duration(cycle, "--cycle"),
                                 _duration(window, "--window"))
    if t1 <= t0:
        raise click.BadParameter("must be after --start", param_hint="--end")
    source = PrometheusTelemetry(prometheus_url, timeout_s=timeout)
    detection = DetectionCycle()
    started = time.perf_counter()
    cycles = findings = 0
    kinds: dict[str, int] = {}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as out, _scratch_store(incidents_path is not None) as store:
        t = t0
        while t < t1:
            t = min(t + cycle_s, t1)
            lo = max(t0, t - window_s) if cycles == 0 else max(t0, t - cycle_s - step_s)
            try:
                frame = source.frame(lo, t, step_s)
            except TelemetryError as exc:
                raise click.ClickException(f"cycle ending {datetime.fromtimestamp(t).isoformat()}: {exc}") from exc
            found = detection.update(frame)
            for finding in found:
                out.write(json.dumps(finding.to_json()) + "\n")
                findings += 1
                kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
            if store is not None:
                _ingest(store, found, fleet_nodes=len(set(frame.gpus.hostname)) or len(frame.nodes))
            cycles += 1
        paged = _write_incidents(store, incidents_path) if store is not None and incidents_path else None
    summary: dict[str, Any] = {"cycles": cycles, "findings": findings, "by_kind": dict(sorted(kinds.items())),
                               "seconds": round(time.perf_counter() - started, 3), "out": str(out_path)}
    if paged is not None:
        summary |= {"incidents": len(paged), "incidents_out": str(incidents_path)}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"{cycles} cycles, {findings} findings → {out_path} ({summary['seconds']}s)")


@contextmanager
def _scratch_store(wanted: bool) -> Iterator[Any]:
    """A migrated SQLite store in a temporary folder, for the incident service alone; None when not wanted."""
    if not wanted:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="gpuops-backtest-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'backtest.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            yield make_session_factory(engine)
        finally:
            engine.dispose()


def _ingest(store: Any, findings: list[Finding], *, fleet_nodes: int) -> None:
    with UnitOfWork(store) as uow:
        ingest_findings(uow.session, findings, fleet_nodes=max(fleet_nodes, 1))
        uow.commit()


def _utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")


def _write_incidents(store: Any, path: Path) -> list[dict[str, Any]]:
    """The incidents that paged: top-level and not suppressed (a silence, or folded into a fleet incident)."""
    rows = []
    with UnitOfWork(store) as uow:
        session = uow.session
        for incident in session.scalars(select(Incident).where(
                Incident.parent_id.is_(None), Incident.status != IncidentStatus.SUPPRESSED).order_by(Incident.id)):
            held = session.scalars(select(FindingRecord).where(FindingRecord.incident_id == incident.id)
                                   .order_by(FindingRecord.ts, FindingRecord.id)).all()
            rows.append({
                "opened_at": _utc(incident.opened_at), "hostname": incident.hostname, "gpu": incident.gpu,
                "kind": incident.family, "scope": incident.scope, "severity": incident.severity,
                **({"hosts": incident.details.get("hosts", [])} if incident.scope == "fleet" else {}),
                "findings": [{"ts": _utc(f.ts), "hostname": f.hostname, "gpu": f.gpu, "kind": f.kind,
                              "severity": f.severity, "detector": f.detector} for f in held],
            })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def register(group: click.Group) -> None:
    group.add_command(backtest)
