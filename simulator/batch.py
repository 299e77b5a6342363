"""Batch mode: run a whole scenario without waiting and write its telemetry as OpenMetrics.

The file loads into Prometheus with `promtool tsdb create-blocks-from openmetrics FILE DIR`.
Each metric family is written once and contiguously (samples in time order within it), counters
are declared `unknown` because dcgm-exporter's counter names do not end in `_total`, and the
file ends with `# EOF`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from simulator.twin import Twin


def write_openmetrics(twin: Twin, path: str | Path, every: int = 1) -> int:
    """Run `twin` to its end, writing a sample set every `every` steps; returns samples written."""
    if every < 1:
        raise ValueError("every must be at least 1 step")
    headers: dict[str, list[str]] = {}  # family -> [help, type], in order of first appearance
    samples = 0
    with tempfile.TemporaryDirectory(prefix="gpuops-om-") as tmp:
        parts: dict[str, TextIO] = {}
        try:
            steps = 0
            while not twin.finished:
                twin.step()
                steps += 1
                if steps % every == 0:
                    samples += _append_step(twin, headers, parts, Path(tmp))
        finally:
            for handle in parts.values():
                handle.close()
        with Path(path).open("w", encoding="utf-8") as out:
            for index, (family, (help_text, kind)) in enumerate(headers.items()):
                if family not in parts:
                    continue
                out.write(f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n")
                with (Path(tmp) / f"{index}.om").open(encoding="utf-8") as part:
                    shutil.copyfileobj(part, out)
            out.write("# EOF\n")
    return samples


def _append_step(twin: Twin, headers: dict[str, list[str]], parts: dict[str, TextIO], tmp: Path) -> int:
    family, written = "", 0
    for line in twin.metrics_text(timestamps="openmetrics").splitlines():
        if line.startswith("# HELP "):
            family, help_text = line[7:].split(" ", 1)
            headers.setdefault(family, [help_text, "unknown"])
        elif line.startswith("# TYPE "):
            headers[family][1] = "gauge" if line.endswith(" gauge") else "unknown"
        elif line:
            handle = parts.get(family)
            if handle is None:
                index = list(headers).index(family)
                handle = parts[family] = (tmp / f"{index}.om").open("w", encoding="utf-8")
            handle.write(line + "\n")
            written += 1
    return written
