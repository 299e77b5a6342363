"""Durations in scenario files: `90s`, `15m`, `6h`, `1d`, `250ms`, combinations such as `1h20m30s` or `42m55s`,
or a bare number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_UNIT_ORDER = ("d", "h", "m", "s", "ms")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

def parse_duration(value: Any) -> float:
    """Seconds from `90s`, `15m`, `6h`, `1d`, `250ms` or a plain non-negative number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '90s', '15m' or '6h', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    elif isinstance(value, str) and (combined := _combined(value)) is not None:
        seconds = combined
    else:
        raise ValueError(f"expected a duration like '90s', '15m', '6h' or '1h20m30s', got {value!r}")
    if seconds != seconds or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    return seconds


def _combined(text: str) -> float | None:
    """`1h20m30s`: parts from the largest unit down, each unit at most once; None when it is not that."""
    compact = text.strip()
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        return None
    ranks = [_UNIT_ORDER.index(u) for _, u in parts]
    if ranks != sorted(set(ranks)):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration (`90s`, `15m`, `6h`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
