"""Per deployment: a causal demand forecast and a replica plan one cold start ahead.

Each cycle folds what it observed into the state (never anything later) and plans:

* demand rate = the largest of the estimates of the deployment's own next arrival, plus what the other
  deployments' arrivals announce:
  - a recent rate (an EWMA of arrivals, which a burst lifts at once);
  - optionally (`hazard`), the hazard of its idle-gap distribution: the rate at which its past quiet spells
    ended once they had lasted as long as the current one (a life table over gap bins, the open spell counted
    as time at risk, shrunk towards the fleet's). A client that calls every two hours is warmed shortly
    before its call; a deployment quiet for longer than it ever was has no hazard left;
  - the seasonal rate learned for this hour of the day and of the week, at now and one cold start ahead, while
    the current quiet spell is no longer than one the deployment has already lived through (`seasonal_gate`;
    else it may be gone, and yesterday's hour says nothing: without the gate, a deployment called every hour
    of one day stays warm for days while its hours' counts decay);
  - cross-deployment wake-ups: users move between base models, so an arrival at A is often followed within a
    minute or two by the first request in a long while at B. For each pair, the share of A's arrivals that B
    woke after (first arrival after `wake_gap_s` quiet) within each lag bin is learned; while A's latest
    arrival is that far back, B's rate gains that share spread over the bin;
* the deployment's cold start = a high quantile of the cold starts it observed itself (the fleet's while it has
  seen too few, a default before anything is seen);
* a warm spare is worth keeping while the rate is above `1 / warm_value_s`: holding a replica idle for a moment
  dt costs dt GPU-seconds and spares, with probability rate * dt, a user a cold start, which is valued at
  `warm_value_s` GPU-seconds. While warm, the spares cover the arrivals expected within one cold start (a
  one-sided 90% Poisson bound), so a request finds a loaded replica instead of waiting for one;
* replicas = requests in flight + spares, scaled down only after a cool-down of one cold start (the ski-rental
  break-even: an idle replica kept that long costs what restarting it would).

Vectorised over the fleet: one cycle for 1,000 deployments is a few numpy operations. The pair counts are
dense, `len(cross_lags_s)` x n x n floats (16 MB for 1,000 deployments).
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
# Bins of the quiet spell between a deployment's arrivals: 0, 15 s, then a factor of sqrt(2) up to 11 days, and
# beyond. The open-ended bin's prior time at risk is its lower edge.
GAP_EDGES = np.concatenate(([0.0], 15.0 * 2.0 ** (np.arange(33) / 2), [math.inf]))
GAP_WIDTHS = np.diff(GAP_EDGES)
GAP_WIDTHS[-1] = GAP_EDGES[-2]


@dataclass(frozen=True)
class PlannerSettings:
    """Chosen by reasoning, not fitted to a trace (see the module docstring). `warm_value_s` is the operating
    point: the GPU-seconds one avoided cold-start wait is worth; larger keeps more replicas warm. `seasonal`,
    `seasonal_gate`, `hazard` and `cross` switch those terms of the rate on or off. The idle-gap hazard is off
    by default: on GenTD26's first half it cost 0.1 to 0.5 points of requests over 5 s at like GPU-hours (it
    serves a periodic client, which that trace hardly has). `cross_lags_s` are the upper
    edges of the lag bins after another deployment's arrival; `wake_gap_s` the quiet spell after which an
    arrival counts as a deployment waking."""

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
    cross: bool = True
    cross_lags_s: tuple[float, ...] = (120.0, 600.0)
    wake_gap_s: float = 600.0
    hazard: bool = False
    hazard_prior_gaps: float = 1.0
    seasonal_gate: bool = True


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
        self._last_arrival = np.full(n, -math.inf)
        self._events = np.zeros(n)
        self._wakes = np.zeros((len(s.cross_lags_s), n, n))
        self._credited = np.zeros((n, n), dtype=bool)
        self._longest_gap = np.zeros(n)
        self._gap_events = np.zeros((n, GAP_WIDTHS.size))
        self._gap_exposure = np.zeros((n, GAP_WIDTHS.size))
        self._fleet_hazard = np.zeros(GAP_WIDTHS.size)
        self._prior_exposure = s.hazard_prior_gaps * GAP_WIDTHS
        self._rows = np.arange(n)
        self._edges = np.asarray(s.cross_lags_s, dtype=np.float64)
        self._widths = np.diff(np.concatenate(([0.0], self._edges)))

    def decide(self, observation: CycleObservation) -> IntArray:
        """Desired replicas per deployment at `observation.now`, from this and earlier observations only."""
        self._observe(observation)
        s = self.settings
        horizon = self.cold_start_s + s.period_s
        rate = self._recent
        if s.hazard:
            rate = np.maximum(rate, self._hazard(observation.now))
        if s.seasonal:
            ahead = observation.now + float(horizon.max())
            seasonal = np.maximum(self._seasonal(observation.now), self._seasonal(ahead))
            if s.seasonal_gate:  # the clock's forecast holds only for a quiet spell no longer than one already lived
                seasonal = np.where(observation.now - self._last_arrival <= self._longest_gap, seasonal, 0.0)
            rate = np.maximum(rate, seasonal)
        if s.cross:
            rate = rate + self._cross_rate(observation.now)
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

    def _hazard(self, now: float) -> FloatArray:
        """Each deployment's rate of a next arrival given how long it has been idle: the piecewise-constant
        hazard of its own gaps between arrivals (events over time at risk per gap bin, the open gap counted as
        time at risk), shrunk towards the fleet's by `hazard_prior_gaps` gaps' worth of time at risk."""
        idle = now - self._last_arrival
        k = np.minimum(np.searchsorted(GAP_EDGES, idle, side="right") - 1, GAP_WIDTHS.size - 1)
        open_exposure = idle - GAP_EDGES[k]  # the open gap's time at risk in its own bin
        events = self._gap_events[self._rows, k] + self._prior_exposure[k] * self._fleet_hazard[k]
        exposure = self._gap_exposure[self._rows, k] + open_exposure + self._prior_exposure[k]
        hazard: FloatArray = np.where(np.isfinite(idle), events / exposure, 0.0)
        return hazard

    def _learn_gaps(self, arrived: IntArray, now: float) -> None:
        gap = now - self._last_arrival[arrived]
        seen = np.isfinite(gap)
        arrived, gap = arrived[seen], gap[seen]
        if not arrived.size:
            return
        k = np.searchsorted(GAP_EDGES, gap, side="right") - 1
        self._longest_gap[arrived] = np.maximum(self._longest_gap[arrived], gap)
        self._gap_events[arrived, k] += 1
        self._gap_exposure[arrived] += np.clip(gap[:, None] - GAP_EDGES[None, :-1], 0.0,
                                               GAP_EDGES[None, 1:] - GAP_EDGES[None, :-1])
        self._fleet_hazard = self._gap_events.sum(axis=0) / np.maximum(self._gap_exposure.sum(axis=0), 1e-9)

    def _cross_rate(self, now: float) -> FloatArray:
        """Wake-ups per second expected of each deployment from the other deployments' latest arrivals: for a
        deployment A that last saw an arrival `lag` ago, B's share of A's arrivals that were followed by B
        waking (its first arrival after `wake_gap_s` quiet) within `lag`'s bin, spread over the bin."""
        rate = np.zeros(self.n)
        lag = now - self._last_arrival
        recent = np.flatnonzero(lag < self.settings.cross_lags_s[-1])
        if not recent.size:
            return rate
        bins = np.searchsorted(self._edges, lag[recent], side="right")
        for j in np.unique(bins):
            active = recent[bins == j]
            rate += (1.0 / self._events[active]) @ self._wakes[j, active] / self._widths[j]
        return rate

    def _learn_cross(self, o: CycleObservation) -> None:
        """Credit each deployment that woke this cycle to the other deployments' latest arrivals, once per
        arrival and by lag; then this cycle's arrivals become the latest."""
        arrived = np.flatnonzero(o.arrivals > 0)
        if not arrived.size:
            return
        woke = arrived[o.now - self._last_arrival[arrived] >= self.settings.wake_gap_s]
        lag = o.now - self._last_arrival
        sources = np.flatnonzero(lag < self.settings.cross_lags_s[-1])
        if woke.size and sources.size:
            bins = np.searchsorted(self._edges, lag[sources], side="right")
            for j in np.unique(bins):
                pairs = np.ix_(sources[bins == j], woke)
                self._wakes[j][pairs] += ~self._credited[pairs]
                self._credited[pairs] = True
        self._events[arrived] += 1
        self._credited[arrived] = False

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
        arrived = np.flatnonzero(o.arrivals > 0)
        if self.settings.hazard or self.settings.seasonal_gate:
            self._learn_gaps(arrived, o.now)
        if self.settings.cross:
            self._learn_cross(o)
        self._last_arrival[arrived] = o.now

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
