"""Per deployment: a causal demand forecast and a replica plan one cold start ahead.

Each cycle folds what it observed into the state (never anything later) and plans:

* demand rate = the larger of a recent rate (an EWMA of arrivals, which a burst lifts at once) and the seasonal
  rate learned for this hour of the day and of the week, at now and one cold start ahead;
* the deployment's cold start = a high quantile of the cold starts it observed itself (the fleet's while it has
  seen too few, a default before anything is seen);
* a warm spare is worth keeping while the rate is above `1 / warm_value_s`: holding a replica idle for a moment
  dt costs dt GPU-seconds and spares, with probability rate * dt, a user a cold start, which is valued at
  `warm_value_s` GPU-seconds. While warm, the spares cover the arrivals expected within one cold start (a
  one-sided 90% Poisson bound), so a request finds a loaded replica instead of waiting for one;
* replicas = requests in flight + spares, scaled down only after a cool-down of one cold start (the ski-rental
  break-even: an idle replica kept that long costs what restarting it would).

Vectorised over the fleet: one cycle for 1,000 deployments is a few numpy operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpuops.autoscale.observation import CycleObservation, IntArray

FloatArray = npt.NDArray[np.float64]
HOUR = 3600.0
DAY = 24 * HOUR
WEEK_HOURS = 168
MAX_COLD_START_S = 600.0  # the cool-down never holds a replica longer than this many cold-start seconds


@dataclass(frozen=True)
class PlannerSettings:
    """Chosen by reasoning, not fitted to a trace (see the module docstring). `warm_value_s` is the operating
    point: the GPU-seconds one avoided cold-start wait is worth; larger keeps more replicas warm. `seasonal`
    off leaves the recent rate alone (for comparison)."""

    period_s: float = 15.0
    recent_half_life_s: float = 600.0
    warm_value_s: float = 3600.0
    cold_start_quantile: float = 0.9
    default_cold_start_s: float = 60.0
    own_cold_starts_needed: int = 5
    seasonal_alpha: float = 0.3
    burst_z: float = 1.2816
    min_replicas: int = 0
    max_replicas: int = 64
    cold_start_memory: int = 200
    cooldown_cold_starts: float = 1.0
    seasonal: bool = True


class DemandPlanner:
    """The scaler's state for a fleet of `n` deployments; `decide` is one cycle."""

    name = "gpuops"

    def __init__(self, n: int, settings: PlannerSettings | None = None) -> None:
        self.settings = s = settings or PlannerSettings()
        self.n = n
        self._tau = s.recent_half_life_s / math.log(2.0)
        self._recent = np.zeros(n)
        self._last_now: float | None = None
        self._hour: int | None = None
        self._hour_counts = np.zeros(n)
        self._daily = np.zeros((24, n))
        self._daily_seen = np.zeros(24, dtype=bool)
        self._weekly = np.zeros((WEEK_HOURS, n))
        self._weekly_seen = np.zeros(WEEK_HOURS, dtype=bool)
        self._own: list[list[float]] = [[] for _ in range(n)]
        self._own_count = np.zeros(n, dtype=np.int64)
        self._fleet: list[float] = []
        self.cold_start_s = np.full(n, s.default_cold_start_s)
        slots = math.ceil(s.cooldown_cold_starts * MAX_COLD_START_S / s.period_s) + 1
        self._wanted = np.zeros((slots, n), dtype=np.int64)
        self._slot = 0

    def decide(self, observation: CycleObservation) -> IntArray:
        """Desired replicas per deployment at `observation.now`, from this and earlier observations only."""
        self._observe(observation)
        s = self.settings
        horizon = self.cold_start_s + s.period_s
        rate = self._recent
        if s.seasonal:
            ahead = observation.now + float(horizon.max())
            rate = np.maximum(rate, np.maximum(self._seasonal(observation.now), self._seasonal(ahead)))
        warm = rate * s.warm_value_s >= 1.0
        expected = self._recent * horizon
        spares = np.where(warm, np.maximum(1, np.ceil(expected + s.burst_z * np.sqrt(expected))), 0)
        wanted = np.minimum(observation.in_flight + spares.astype(np.int64), s.max_replicas)
        self._wanted[self._slot] = wanted
        self._slot = (self._slot + 1) % self._wanted.shape[0]
        age = (self._slot - 1 - np.arange(self._wanted.shape[0])[:, None]) % self._wanted.shape[0]
        cooldown_slots = np.ceil(s.cooldown_cold_starts * np.minimum(self.cold_start_s, MAX_COLD_START_S) / s.period_s)
        held = np.where(age <= cooldown_slots[None, :], self._wanted, 0).max(axis=0)
        desired: IntArray = np.clip(np.maximum(wanted, held), s.min_replicas, s.max_replicas).astype(np.int64)
        return desired

    def _observe(self, o: CycleObservation) -> None:
        if self._last_now is not None:
            self._recent *= math.exp(-max(0.0, o.now - self._last_now) / self._tau)
        self._recent += o.arrivals / self._tau
        self._last_now = o.now
        hour = math.floor(o.now / HOUR)
        if self._hour is None:
            self._hour = hour
        elif hour != self._hour:
            self._fold_hour(self._hour)
            self._hour = hour
        self._hour_counts += o.arrivals
        if o.cold_starts:
            self._learn_cold_starts(o.cold_starts)

    def _fold_hour(self, hour: int) -> None:
        alpha = self.settings.seasonal_alpha
        for table, seen, slot in ((self._daily, self._daily_seen, hour % 24),
                                  (self._weekly, self._weekly_seen, _hour_of_week(hour))):
            table[slot] = (1 - alpha) * table[slot] + alpha * self._hour_counts if seen[slot] else self._hour_counts
            seen[slot] = True
        self._hour_counts = np.zeros(self.n)

    def _seasonal(self, at: float) -> FloatArray:
        """Arrivals per second expected at `at` from the hour-of-day profile, averaged with the hour-of-week
        profile once a week has been seen."""
        hour = math.floor(at / HOUR)
        day_slot, week_slot = hour % 24, _hour_of_week(hour)
        if not self._daily_seen[day_slot]:
            return np.zeros(self.n)
        per_hour = self._daily[day_slot]
        if self._weekly_seen[week_slot]:
            per_hour = 0.5 * (per_hour + self._weekly[week_slot])
        rate: FloatArray = per_hour / HOUR
        return rate

    def _learn_cold_starts(self, seen: tuple[tuple[int, float], ...]) -> None:
        s = self.settings
        touched = set()
        for deployment, seconds in seen:
            self._own[deployment].append(seconds)
            del self._own[deployment][:-s.cold_start_memory]
            self._own_count[deployment] += 1
            self._fleet.append(seconds)
            touched.add(deployment)
        del self._fleet[:-s.cold_start_memory * 10]
        few = self._own_count < s.own_cold_starts_needed
        self.cold_start_s[few] = float(np.quantile(self._fleet, s.cold_start_quantile))
        for d in touched:
            if not few[d]:
                self.cold_start_s[d] = float(np.quantile(self._own[d], s.cold_start_quantile))


def _hour_of_week(hour: int) -> int:
    """0 = Monday 00:00 UTC (the epoch was a Thursday)."""
    return ((hour // 24 + 3) % 7) * 24 + hour % 24
