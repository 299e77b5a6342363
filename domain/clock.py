"""The service's one clock. Every time gpuops stores (an incident's timeline, an approval, the audit trail, a
row's `updated_at`) comes from here, so a record's times never mix two clocks. In production it is the wall
clock; the demo and the evaluation run a simulated fleet faster than real time and point it at the fleet's
clock (`use`), so what the dashboard, the CLI and the agent write all share the telemetry's time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], float] = time.time


def timestamp() -> float:
    """Seconds since the epoch on the service's clock."""
    return _source()


def now() -> datetime:
    """The service's current time, UTC-aware."""
    return datetime.fromtimestamp(_source(), tz=UTC)


def use(source: Callable[[], float]) -> None:
    """Make `source` (seconds since the epoch) the service's clock for this process."""
    global _source
    _source = source


@contextmanager
def using(source: Callable[[], float]) -> Iterator[None]:
    """`use(source)` for the block, then the clock it replaced."""
    global _source
    before = _source
    _source = source
    try:
        yield
    finally:
        _source = before
