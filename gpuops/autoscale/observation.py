"""What one scaling cycle sees of every deployment, and nothing later: the same shape from live telemetry and
from a replayed trace."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CycleObservation:
    """One scaling cycle at `now` (s). Arrays are per deployment, in a fixed order.

    `arrivals`: requests that arrived since the previous cycle; `in_flight`: requests running or waiting now;
    `replicas`: replicas started and not stopped (ready or still loading); `cold_starts`: (deployment, seconds)
    of every replica that became ready since the previous cycle.
    """

    now: float
    arrivals: IntArray
    in_flight: IntArray
    replicas: IntArray
    cold_starts: tuple[tuple[int, float], ...] = field(default=())
