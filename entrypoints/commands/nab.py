"""`gpuops nab`: run a streaming detector over a corpus in NAB's format and score it like NAB does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from detectors.nab_scorer import ScoredFile, score_all_profiles
from detectors.univariate import DETECTORS
from evaluation import nab_io


def register(group: click.Group) -> None:
    group.add_command(nab)


@click.command("nab")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of <folder>/<file>.csv series with timestamp,value columns.")
@click.option("--windows", "windows_file", type=click.Path(path_type=Path), required=True,
              help="Anomaly windows JSON (NAB's combined_windows.json layout).")
@click.option("--detector", "detector_name", type=click.Choice(sorted(DETECTORS)), default="gpuops",
              show_default=True, help="Streaming detector to run.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
              help="Score existing per-row results (<folder>/<file>.csv with an anomaly_score column) "
                   "instead of running a detector.")
@click.option("--scores-dir", type=click.Path(path_type=Path), default=None,
              help="Also write each file's per-row scores as DIR/<folder>/<file>.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def nab(data_dir: Path | None, windows_file: Path, detector_name: str, results_dir: Path | None,
        scores_dir: Path | None, as_json: bool) -> None:
    """Score a detector on a Numenta Anomaly Benchmark corpus (all three NAB profiles)."""
    if (data_dir is None) == (results_dir is None):
        raise click.UsageError("give exactly one of --data (run a detector) or --results (score results)")
    started = time.perf_counter()
    try:
        report = _run(data_dir, windows_file, detector_name, results_dir, scores_dir)
    except nab_io.CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    report["seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    click.echo(f"{report['detector']}: {report['files']} files, {report['rows']} rows, {report['seconds']} s")
    for name in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        p = report["profiles"][name]
        click.echo(f"  {name:<20} {report[name]:7.2f}  threshold {p['threshold']:.6g}  "
                   f"raw {p['raw_score']:.3f}  detections in/out windows {p['detected_in_windows']}/"
                   f"{p['detected_outside_windows']}")


def _run(data_dir: Path | None, windows_file: Path, detector_name: str, results_dir: Path | None,
         scores_dir: Path | None) -> dict[str, Any]:
    windows = nab_io.read_windows(windows_file)
    source = results_dir if results_dir is not None else data_dir
    assert source is not None
    names = nab_io.list_files(source)
    missing = [n for n in names if n not in windows]
    if missing:
        raise nab_io.CorpusError(
            f"{windows_file} has no windows for {missing[0]} (and {len(missing) - 1} more)")
    files: list[ScoredFile] = []
    rows = 0
    detect_seconds = 0.0
    for name in names:
        if results_dir is not None:
            series = nab_io.read_series(results_dir, name, column="anomaly_score")
            scores = series.values
        else:
            series = nab_io.read_series(source, name)
            t0 = time.perf_counter()
            scores = DETECTORS[detector_name]()(series.values)
            detect_seconds += time.perf_counter() - t0
        if scores_dir is not None:
            nab_io.write_scores(scores_dir, series, scores)
        rows += int(series.values.shape[0])
        files.append(ScoredFile(name, scores, nab_io.window_rows(series, windows[name])))
    results = score_all_profiles(files)
    report: dict[str, Any] = {
        "detector": "results" if results_dir is not None else detector_name,
        "files": len(files),
        "rows": rows,
        "windows": sum(len(f.windows) for f in files),
        "detector_seconds": round(detect_seconds, 3),
        "profiles": {},
    }
    for name, r in results.items():
        report[name] = r.score
        report["profiles"][name] = {
            "score": r.score, "raw_score": r.raw_score, "threshold": r.threshold,
            "detected_in_windows": r.detected_in_windows,
            "detected_outside_windows": r.detected_outside_windows,
            "file_scores": r.file_scores,
        }
    return report
