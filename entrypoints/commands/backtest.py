"""`gpuops backtest`: replay a range stored in Prometheus through the detectors, cycle by cycle."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click

from connectors.telemetry.errors import TelemetryError
from connectors.telemetry.prometheus import PrometheusTelemetry
from detectors.pipeline import DetectionCycle
from entrypoints.commands.context import echo_json
from simulator.scenario import ScenarioError, parse_duration


def _iso(value: str, name: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise click.BadParameter(f"expected an ISO 8601 time such as 2026-05-01T00:00:00Z, got {value!r}",
                                 param_hint=name) from exc


def _duration(value: str, name: str) -> float:
    try:
        return parse_duration(value)
    except ScenarioError as exc:
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
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per Prometheus query.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def backtest(prometheus_url: str, start: str, end: str, step: str, cycle: str, window: str, out_path: Path,
             timeout: float, as_json: bool) -> None:
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
    with out_path.open("w") as out:
        t = t0
        while t < t1:
            t = min(t + cycle_s, t1)
            lo = max(t0, t - window_s) if cycles == 0 else max(t0, t - cycle_s - step_s)
            try:
                frame = source.frame(lo, t, step_s)
            except TelemetryError as exc:
                raise click.ClickException(f"cycle ending {datetime.fromtimestamp(t).isoformat()}: {exc}") from exc
            for finding in detection.update(frame):
                out.write(json.dumps(finding.to_json()) + "\n")
                findings += 1
                kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
            cycles += 1
    summary = {"cycles": cycles, "findings": findings, "by_kind": dict(sorted(kinds.items())),
               "seconds": round(time.perf_counter() - started, 3), "out": str(out_path)}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"{cycles} cycles, {findings} findings → {out_path} ({summary['seconds']}s)")


def register(group: click.Group) -> None:
    group.add_command(backtest)
