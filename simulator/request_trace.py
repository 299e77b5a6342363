"""Read a request trace and a cold-start file in GenTD26's CSV format (plain or gzip), all or nothing.

A malformed line raises `TraceError` naming the file, the line (the header is line 1) and the field; nothing
is returned half-loaded. A request without a base model (`checkpoint_model_version_id` empty, as for some
PENDING rows) can run on no replica: it is counted in `RequestTrace.skipped`, not replayed.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REQUEST_FIELDS = ("gmt_create", "exec_time_seconds", "checkpoint_model_version_id")
COLD_START_FIELDS = ("value",)


class TraceError(ValueError):
    """A trace file is missing, unreadable or has a malformed line; the message says where."""


@dataclass(frozen=True)
class RequestTrace:
    """Requests sorted by arrival: `arrival` (s since the epoch, UTC), `service` (s the request held a GPU),
    `model` (index into `models`, the base-model ids sorted)."""

    arrival: FloatArray
    service: FloatArray
    model: IntArray
    models: tuple[str, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.arrival.shape[0])

    def before(self, cut: float) -> RequestTrace:
        """The requests that arrived before `cut`, with the same model indices."""
        keep = self.arrival < cut
        return RequestTrace(self.arrival[keep], self.service[keep], self.model[keep], self.models, 0)


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a CSV file, plain or gzip ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{path}, line 1: the file is empty; expected a header with {', '.join(required)}")
    missing = [f for f in required if f not in header]
    if missing:
        raise TraceError(f"{path}, line 1, field {missing[0]!r}: missing from the header")
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            raise TraceError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
        yield line, dict(zip(header, row, strict=True))


def _number(path: Path, line: int, field: str, text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}, line {line}, field {field!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise TraceError(f"{path}, line {line}, field {field!r}: {text!r} must be a "
                         f"{'positive' if positive else 'non-negative'} finite number")
    return value


def _timestamp(path: Path, line: int, field: str, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TraceError(f"{path}, line {line}, field {field!r}: {text!r} is not a time like "
                         "2024-11-15 16:57:50") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_requests(path: Path) -> RequestTrace:
    """One request per row: arrival `gmt_create`, GPU time `exec_time_seconds`, base model
    `checkpoint_model_version_id`."""
    arrivals: list[float] = []
    services: list[float] = []
    names: list[str] = []
    skipped = 0
    for line, row in _rows(path, REQUEST_FIELDS):
        at = _timestamp(path, line, "gmt_create", row["gmt_create"])
        service = _number(path, line, "exec_time_seconds", row["exec_time_seconds"])
        name = row["checkpoint_model_version_id"].strip()
        if not name:
            skipped += 1
            continue
        arrivals.append(at)
        services.append(service)
        names.append(name)
    if not arrivals:
        raise TraceError(f"{path}: no request with a base model to replay")
    models = tuple(sorted(set(names)))
    index = {m: i for i, m in enumerate(models)}
    arrival = np.asarray(arrivals, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    model = np.asarray([index[n] for n in names], dtype=np.int64)
    return RequestTrace(arrival[order], np.asarray(services, dtype=np.float64)[order], model[order], models,
                        skipped)


def read_cold_starts(path: Path) -> FloatArray:
    """The observed cold starts in seconds (the file's `value` is in ms), in file order."""
    values = [_number(path, line, "value", row["value"], positive=True) / 1000.0
              for line, row in _rows(path, COLD_START_FIELDS)]
    if not values:
        raise TraceError(f"{path}: no cold start in it")
    return np.asarray(values, dtype=np.float64)
