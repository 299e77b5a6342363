"""Benchmark of the command line's start-up: `gpuops --help` (and `gpuops incidents --help`, which imports one
command module) against a bare interpreter start in the same run, medians of repeated runs in fresh processes.
The target is under 1 s for `gpuops --help` on these machines.

Run: `python -m bench cli` (writes bench/results/cli.json).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPEATS = 9


def _median_s(argv: list[str], repeats: int = REPEATS) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(results_dir: Path) -> dict[str, Any]:
    """Time the starts and write `results_dir / "cli.json"`."""
    python = sys.executable
    bare = _median_s([python, "-c", "pass"])
    cli = [str(Path(python).with_name("gpuops"))]  # the console script `pip install` wrote
    top = _median_s([*cli, "--help"])
    sub = _median_s([*cli, "incidents", "--help"])
    results = {
        "repeats": REPEATS,
        "python_start_s": round(bare, 3),
        "gpuops_help_s": round(top, 3),
        "gpuops_incidents_help_s": round(sub, 3),
        "gpuops_help_ratio_to_python_start": round(top / bare, 2),
        "target_s": 1.0,
        "met": top < 1.0,
    }
    (results_dir / "cli.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
