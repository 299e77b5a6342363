"""`gpuops nab` through click: results mode, detector mode, score files, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from detectors.univariate import DETECTORS
from entrypoints.commands import nab as nab_command
from tests.unit.nab_corpus import nab_dir


def invoke(*args: str) -> click.testing.Result:
    group = click.Group("gpuops")
    nab_command.register(group)
    return CliRunner().invoke(group, ["nab", *args])


def small_corpus(tmp_path: Path, value: str = "1.0") -> tuple[Path, Path]:
    data = tmp_path / "data" / "folder"
    data.mkdir(parents=True)
    stamps = [f"2020-01-01 {h:02d}:{mi:02d}:00" for h in range(24) for mi in range(0, 60, 5)]
    rows = ["timestamp,value"] + [f"{t},{value if i == 150 else i % 7}" for i, t in enumerate(stamps)]
    (data / "s.csv").write_text("\n".join(rows) + "\n")
    windows = tmp_path / "windows.json"
    edges = ["2020-01-01 12:10:00.000000", "2020-01-01 12:40:00.000000"]
    windows.write_text(json.dumps({"folder/s.csv": [edges]}))
    return tmp_path / "data", windows


def test_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0 and "--windows" in result.output and "--scores-dir" in result.output


def test_results_mode_reproduces_the_reference(tmp_path: Path) -> None:
    root = nab_dir()
    result = invoke("--results", str(root / "reference_results" / "numenta"),
                    "--windows", str(root / "labels" / "combined_windows.json"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    reference = json.loads((root / "reference_scores.json").read_text())["numenta"]
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert abs(report[profile] - reference[profile]["score"]) < 0.1
    assert report["files"] == 35 and report["rows"] == 181_653


def test_detector_mode_writes_score_files(tmp_path: Path) -> None:
    data, windows = small_corpus(tmp_path, value="500")
    out = tmp_path / "scores"
    result = invoke("--data", str(data), "--windows", str(windows), "--detector", "zscore",
                    "--scores-dir", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "files", "rows", "seconds"} <= set(report)
    assert report["files"] == 1 and report["rows"] == 288
    lines = (out / "folder" / "s.csv").read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == 289
    scores = np.array([float(x.split(",")[2]) for x in lines[1:]])
    assert np.all((scores >= 0) & (scores <= 1)) and int(np.argmax(scores)) == 150
    # the spike is the top score: detected at row 150 of the window [146, 152], nothing else detected
    tp = (2 / (1 + math.exp(5 * -3 / 7)) - 1) / (2 / (1 + math.exp(-5)) - 1)
    assert report["standard"] == pytest.approx(100.0 * (tp + 1) / 2)


@pytest.mark.parametrize("value", ["nan", "abc", ""])
def test_bad_values_fail_clearly(tmp_path: Path, value: str) -> None:
    message = "not a finite number"
    data, windows = small_corpus(tmp_path, value=value)
    result = invoke("--data", str(data), "--windows", str(windows))
    assert result.exit_code != 0 and message in result.output and "s.csv" in result.output


def test_window_edge_without_row_and_missing_inputs_fail_clearly(tmp_path: Path) -> None:
    data, windows = small_corpus(tmp_path)
    windows.write_text(json.dumps({"folder/s.csv": [["2020-01-01 12:11:00", "2020-01-01 12:40:00"]]}))
    result = invoke("--data", str(data), "--windows", str(windows))
    assert result.exit_code != 0 and "matches no row" in result.output
    result = invoke("--data", str(tmp_path / "nope"), "--windows", str(windows))
    assert result.exit_code != 0 and "does not exist" in result.output
    result = invoke("--windows", str(windows))
    assert result.exit_code != 0 and "exactly one of" in result.output


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detectors_are_causal(name: str) -> None:
    rng = np.random.default_rng(3)
    x = np.sin(np.arange(3000) / 40.0) * 10 + rng.normal(0, 1, 3000)
    x[2000:2050] += 25
    full = DETECTORS[name]()(x)
    for cut in (1000, 2010, 2600):
        np.testing.assert_array_equal(DETECTORS[name]()(x[:cut]), full[:cut])
    assert np.all((full >= 0) & (full <= 1))
    assert full[2000:2060].max() > np.percentile(full[:2000], 99)


def test_default_detector_beats_the_statistical_scoreboard_on_the_subset() -> None:
    root = nab_dir()
    result = invoke("--data", str(root / "data"), "--windows", str(root / "labels" / "combined_windows.json"),
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["standard"] >= 60.0
    assert report["reward_low_FP_rate"] > 41.7 and report["reward_low_FN_rate"] > 59.6


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan, 2.0]), np.array([[1.0, 2.0]]),
                                 np.array([1.0, np.inf])])
def test_default_detector_refuses_non_finite_or_shaped_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="finite"):
        DETECTORS["gpuops"]()(bad)
