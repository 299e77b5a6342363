"""Small request and cold-start files in GenTD26's format, written by the tests."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from simulator.request_trace import RequestTrace

HEADER = ("gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,"
          "negative_prompt_length,num_images_per_prompt,num_inference_steps,checkpoint_model_version_id,num_lora")
T0 = datetime(2024, 11, 15, tzinfo=UTC).timestamp()


def request_line(at: float, service: float, model: str) -> str:
    stamp = datetime.fromtimestamp(T0 + at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp},TXT_2_IMG,SUCCEED,{service},G0000,63.0,,1.0,30.0,{model},0"


def write_requests(path: Path, rows: Sequence[tuple[float, float, str]], extra: Sequence[str] = ()) -> Path:
    text = "\n".join([HEADER, *(request_line(*r) for r in rows), *extra]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_cold_starts(path: Path, millis: Sequence[float]) -> Path:
    lines = ["timestamp_anon,value,container_ip", *(f"{1662859290 + i},{v},abc{i}" for i, v in enumerate(millis))]
    path.write_text("\n".join(lines) + "\n")
    return path


def trace(rows: Sequence[tuple[float, float, int]], n_models: int = 1) -> RequestTrace:
    """A trace from (seconds after T0, service seconds, model index) rows, already in arrival order."""
    return RequestTrace(np.array([T0 + r[0] for r in rows]), np.array([float(r[1]) for r in rows]),
                        np.array([r[2] for r in rows], dtype=np.int64), tuple(f"M{i:04d}" for i in range(n_models)))


def synthetic_rows(days: float, models: int, seed: int) -> list[tuple[float, float, str]]:
    """A few days of bursty, daily-shaped demand over `models` models."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, float, str]] = []
    t = 0.0
    while t < days * 86400:
        hour = (t / 3600) % 24
        rate = 1 / 300 if 8 <= hour < 20 else 1 / 3600
        t += float(rng.exponential(1 / rate))
        model = f"M{int(rng.integers(models)):04d}"
        for _ in range(int(rng.integers(1, 4))):
            rows.append((round(t), float(rng.integers(5, 60)), model))
            t += float(rng.integers(0, 20))
    return rows
