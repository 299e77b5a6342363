"""Reading and writing corpora in the Numenta Anomaly Benchmark's layout (the I/O the detectors never do).

A corpus is `DATA/<folder>/<file>.csv` with `timestamp,value` columns, plus a windows JSON mapping
`<folder>/<file>.csv` to `[start, end]` timestamp pairs (both inclusive).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from detectors.frame import FloatArray


class CorpusError(ValueError):
    """A corpus file that cannot be read as NAB data; the message names the file and what to fix."""


@dataclass(frozen=True)
class Series:
    """One file of a corpus: its relative name, timestamps (unix seconds), raw timestamp text and values."""

    name: str
    timestamps: FloatArray
    timestamp_text: tuple[str, ...]
    values: FloatArray


def list_files(data_dir: Path) -> list[str]:
    """Relative names `<folder>/<file>.csv` of a corpus, sorted."""
    if not data_dir.is_dir():
        raise CorpusError(f"data directory {data_dir} does not exist; pass the corpus's data folder")
    names = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if not names:
        raise CorpusError(f"no <folder>/<file>.csv files under {data_dir}")
    return names


def _seconds(text: str) -> float:
    """`YYYY-MM-DD HH:MM:SS[.ffffff]`, read as UTC, in unix seconds."""
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


def read_series(data_dir: Path, name: str, column: str = "value") -> Series:
    """Read one CSV; a missing column, an unparsable timestamp or a non-numeric value is an error."""
    path = data_dir / name
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            body = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{path}: cannot read CSV ({exc})") from exc
    if header is None:
        raise CorpusError(f"{path}: empty file, expected a timestamp,{column} header")
    for col in ("timestamp", column):
        if col not in header:
            raise CorpusError(f"{path}: no '{col}' column (columns: {header})")
    ti, vi = header.index("timestamp"), header.index(column)
    stamps = np.empty(len(body))
    values = np.empty(len(body))
    for row, fields in enumerate(body):
        try:
            stamps[row] = _seconds(fields[ti])
        except (ValueError, IndexError) as exc:
            raise CorpusError(f"{path}: unparsable timestamp at data row {row} ({exc})") from exc
        try:
            values[row] = float(fields[vi])
        except (ValueError, IndexError):
            values[row] = np.nan
        if not np.isfinite(values[row]):
            raise CorpusError(f"{path}: '{column}' is missing or not a finite number at data row {row}")
    return Series(name, stamps, tuple(f[ti] for f in body), values)


def read_windows(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The windows JSON: file name -> list of (start, end) timestamp strings."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read windows JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CorpusError(f"{path}: expected an object mapping file names to window lists")
    out: dict[str, list[tuple[str, str]]] = {}
    for name, windows in raw.items():
        if not isinstance(windows, list) or any(not isinstance(w, list) or len(w) != 2 for w in windows):
            raise CorpusError(f"{path}: windows of {name} must be a list of [start, end] pairs")
        out[str(name)] = [(str(a), str(b)) for a, b in windows]
    return out


def window_rows(series: Series, windows: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    """Windows as inclusive row ranges: each edge is the first row whose timestamp equals it."""
    stamps = series.timestamps
    rows = []
    for start, end in windows:
        edges = []
        for edge in (start, end):
            try:
                t = _seconds(edge)
            except ValueError as exc:
                raise CorpusError(f"{series.name}: window edge {edge!r} is not a timestamp") from exc
            hit = np.flatnonzero(stamps == t)
            if not hit.size:
                raise CorpusError(f"{series.name}: window edge {edge} matches no row's timestamp")
            edges.append(int(hit[0]))
        rows.append((edges[0], edges[1]))
    return tuple(rows)


def write_scores(out_dir: Path, series: Series, scores: FloatArray) -> Path:
    """`out_dir/<folder>/<file>.csv` with columns timestamp,value,anomaly_score."""
    path = out_dir / series.name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for text, value, score in zip(series.timestamp_text, series.values, scores, strict=True):
            writer.writerow([text, repr(float(value)), repr(float(score))])
    return path
