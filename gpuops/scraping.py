"""The loop that feeds the direct-scrape telemetry source: scrape every exporter once per scrape interval, in
a background thread, so detection cycles find the window filled (small setups without Prometheus)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.telemetry import NodeSeries, ScrapeTelemetry
from detectors.frame import FleetFrame

log = logging.getLogger(__name__)


class SharedScrapeTelemetry(ScrapeTelemetry):
    """A direct-scrape source that a scrape thread fills while detection cycles read it: one lock between
    writing samples and assembling frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def ingest(self, text: str, source: str, scraped_at: float) -> int:
        with self._lock:
            return super().ingest(text, source, scraped_at)

    def frame(self, start: float, end: float, step: float, metrics: Sequence[str] | None = None,
              node_series: Mapping[str, NodeSeries] | None = None) -> FleetFrame:
        with self._lock:
            return super().frame(start, end, step, metrics, node_series)


class ScrapeLoop:
    """Scrapes `source` every `interval_s` until stopped. A failed scrape is logged and retried next time."""

    def __init__(self, source: ScrapeTelemetry, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("the scrape interval must be positive")
        self.source = source
        self.interval_s = interval_s
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpuops-scrape", daemon=True)

    def start(self) -> ScrapeLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 10)

    def close(self) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.source.scrape()
                self.scrapes += 1
            except Exception:  # the loop must outlive a bad scrape; the problem is logged with its cause
                self.failures += 1
                log.exception("scrape failed; retrying at the next interval")
            self._stop.wait(self.interval_s)
