"""The direct-scrape adapter: reads exporters' /metrics itself (no Prometheus) and keeps a bounded
in-memory window, answering frames the way Prometheus's range queries would.

At each grid time the value is the latest sample at or before it within the lookback (5 minutes,
like Prometheus); a series that disappears from a scrape is stale from then on (samples without
their own timestamps), as in Prometheus.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from connectors.telemetry.errors import TelemetryBadResponse, TelemetryTimeout, TelemetryUnavailable
from connectors.telemetry.port import (
    DEFAULT_GPU_METRICS,
    DEFAULT_HCA_METRICS,
    DEFAULT_NODE_SERIES,
    FloatArray,
    FrameAssembler,
    NodeSeries,
    RawSeries,
    time_grid,
)
from detectors.frame import FleetFrame

log = logging.getLogger(__name__)
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
STALE = math.inf  # stored in place of a value: the series vanished at this time


@dataclass
class _Points:
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    stale_marked: bool = False

    def add(self, ts: float, value: float) -> None:
        if self.times and ts <= self.times[-1]:
            if ts == self.times[-1]:
                self.values[-1] = value
            return
        self.times.append(ts)
        self.values.append(value)

    def trim(self, oldest: float) -> None:
        cut = bisect.bisect_left(self.times, oldest)
        if cut:
            del self.times[:cut], self.values[:cut]

    def at(self, grid: FloatArray, lookback: float) -> tuple[FloatArray, bool]:
        """Values on the grid, and whether any grid time had a sample (a NaN sample counts)."""
        out = np.full(len(grid), np.nan)
        if not self.times:
            return out, False
        times = np.asarray(self.times)
        values = np.asarray(self.values)
        idx = np.searchsorted(times, grid, side="right") - 1
        ok = idx >= 0
        found = np.where(ok, idx, 0)
        fresh = ok & (grid - times[found] <= lookback) & (values[found] != STALE)
        out[fresh] = values[found][fresh]
        return out, bool(fresh.any())


class ScrapeTelemetry:
    """Scrapes exporter /metrics URLs and answers FleetFrames from what it has kept."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        window_s: float = 3600.0,
        lookback_s: float = 300.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        if not urls:
            raise ValueError("give at least one exporter URL to scrape")
        self.urls = list(urls)
        self.window_s = window_s
        self.lookback_s = lookback_s
        self._clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)
        self.timeout_s = timeout_s
        self._series: dict[SeriesKey, _Points] = {}
        self._last_seen: dict[str, set[SeriesKey]] = {}
        self.problems: list[str] = []

    def close(self) -> None:
        self._client.close()

    def scrape(self) -> int:
        """Scrape every URL once; returns the samples kept. Raises after trying every URL if any failed."""
        kept, errors = 0, []
        for url in self.urls:
            try:
                kept += self.ingest(self._fetch(url), source=url, scraped_at=self._clock())
            except (TelemetryUnavailable, TelemetryBadResponse) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return kept

    def _fetch(self, url: str) -> str:
        try:
            response = self._client.get(url)
        except httpx.TimeoutException as exc:
            raise TelemetryTimeout(f"exporter {url} did not answer within {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise TelemetryUnavailable(f"cannot scrape exporter {url}: {exc}") from exc
        if response.status_code != 200:
            raise TelemetryBadResponse(f"exporter {url} answered HTTP {response.status_code}")
        return response.text

    def ingest(self, text: str, source: str, scraped_at: float) -> int:
        """Keep the samples of one exposition; lines that do not parse are reported, the rest kept."""
        seen: set[SeriesKey] = set()
        kept = 0
        for family_no, chunk in enumerate(_chunks(text)):
            try:
                families = list(text_string_to_metric_families(chunk))
            except (ValueError, TypeError, IndexError) as exc:
                snippet = chunk.strip()[:120]
                note = f"{source}: unparseable metric family #{family_no + 1}: {snippet!r} ({exc})"
                self.problems.append(note)
                log.warning("telemetry: %s", note)
                continue
            declared = _declared_counters(chunk)
            for family in families:
                for sample in family.samples:
                    name = sample.name
                    if name.endswith("_total") and name[: -len("_total")] in declared:
                        name = name[
                            : -len("_total")
                        ]  # the parser adds _total to counters; keep the exporter's name
                    key = (name, tuple(sorted(sample.labels.items())))
                    ts = float(sample.timestamp) if sample.timestamp is not None else scraped_at
                    points = self._series.setdefault(key, _Points())
                    points.add(ts, float(sample.value))
                    points.stale_marked = sample.timestamp is None
                    seen.add(key)
                    kept += 1
        for key in self._last_seen.get(source, set()) - seen:
            gone = self._series.get(key)
            if gone is not None and gone.stale_marked:
                gone.add(scraped_at, STALE)
        self._last_seen[source] = seen
        self._trim()
        return kept

    def _trim(self) -> None:
        newest = max((p.times[-1] for p in self._series.values() if p.times), default=None)
        if newest is None:
            return
        oldest = newest - self.window_s
        for key in [k for k, p in self._series.items() if p.times and p.times[-1] < oldest]:
            del self._series[key]
        for points in self._series.values():
            points.trim(oldest)

    def frame(
        self,
        start: float,
        end: float,
        step: float,
        metrics: Sequence[str] | None = None,
        node_series: Mapping[str, NodeSeries] | None = None,
    ) -> FleetFrame:
        """The kept samples on the grid start, start+step, … ≤ end."""
        start, end = float(math.ceil(start)), float(math.floor(end))
        grid = time_grid(start, end, step)
        wanted = list(metrics if metrics is not None else DEFAULT_GPU_METRICS)
        gpu: dict[str, list[RawSeries]] = {m: [] for m in wanted}
        node_specs = node_series if node_series is not None else DEFAULT_NODE_SERIES
        nodes: dict[str, list[RawSeries]] = {k: [] for k in node_specs}
        for (name, label_items), points in self._series.items():
            labels = dict(label_items)
            if name in gpu:
                values, sampled = points.at(grid, self.lookback_s)
                if sampled:
                    gpu[name].append(RawSeries(labels, values))
            for key, spec in node_specs.items():
                if name == spec.metric and all(labels.get(k) == v for k, v in spec.match.items()):
                    values, sampled = points.at(grid, self.lookback_s)
                    if sampled:
                        nodes[key].append(RawSeries(labels, values))
        hcas: dict[str, list[RawSeries]] = {}
        for (name, label_items), points in self._series.items():
            if name in DEFAULT_HCA_METRICS:
                values, sampled = points.at(grid, self.lookback_s)
                if sampled:
                    hcas.setdefault(name, []).append(RawSeries(dict(label_items), values))
        assembler = FrameAssembler(grid)
        frame = assembler.build({k: v for k, v in gpu.items() if v}, nodes, hcas)
        self.problems.extend(assembler.skipped)
        return frame


def _declared_counters(chunk: str) -> set[str]:
    """Counter names exactly as a family's `# TYPE` line spells them."""
    names = set()
    for line in chunk.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"] and parts[3] == "counter":
            names.add(parts[2])
    return names


def _chunks(text: str) -> list[str]:
    """The exposition cut into metric families, so one malformed family does not lose the others."""
    out: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP ") and current:
            out.append("".join(current))
            current = []
        current.append(line)
    if current:
        out.append("".join(current))
    return out
