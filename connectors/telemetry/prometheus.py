"""The Prometheus adapter: one range query per metric for the whole fleet, explicit time ranges,
timeouts, retries on named transient errors, and every failure translated to TelemetryError."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from connectors.telemetry.errors import (
    TelemetryBadResponse,
    TelemetryError,
    TelemetryQueryError,
    TelemetryTimeout,
    TelemetryUnavailable,
)
from connectors.telemetry.port import (
    DEFAULT_GPU_METRICS,
    DEFAULT_HCA_METRICS,
    DEFAULT_NODE_SERIES,
    FloatArray,
    FrameAssembler,
    NodeSeries,
    RawSeries,
    hca_promql,
    time_grid,
)
from detectors.frame import FleetFrame

log = logging.getLogger(__name__)

# Statuses a Prometheus (or the proxy in front of it) answers while it is briefly unable to serve.
TRANSIENT_STATUSES = (429, 502, 503, 504)


class PrometheusTelemetry:
    """Pulls FleetFrames from a Prometheus server's HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        hca_metrics: Sequence[str] = DEFAULT_HCA_METRICS,
    ) -> None:
        """`hca_metrics`: the node exporter's fabric series a frame carries per node and HCA (empty: none)."""
        if retries < 0:
            raise ValueError("retries must be zero or more")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        # The client's own urllib3 retries stay off: retrying is decided here, on named errors only.
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers or {}),
            disable_ssl=True,
            timeout=timeout_s,
            retry=Retry(total=0, read=False, raise_on_status=False),
        )
        self.skipped: list[str] = []
        self.hca_metrics = tuple(hca_metrics)

    def frame(
        self,
        start: float,
        end: float,
        step: float,
        metrics: Sequence[str] | None = None,
        node_series: Mapping[str, NodeSeries] | None = None,
    ) -> FleetFrame:
        """One query_range per metric over [start, end] at `step` (start/end whole seconds)."""
        start, end = float(math.ceil(start)), float(math.floor(end))
        grid = time_grid(start, end, step)
        gpu: dict[str, list[RawSeries]] = {}
        for metric in metrics if metrics is not None else DEFAULT_GPU_METRICS:
            gpu[metric] = self._series(metric, grid, step)
        nodes: dict[str, list[RawSeries]] = {}
        for key, spec in (node_series if node_series is not None else DEFAULT_NODE_SERIES).items():
            nodes[key] = self._series(spec.promql(), grid, step)
        assembler = FrameAssembler(grid)
        frame = assembler.build(gpu, nodes, self._hca_series(grid, step))
        self.skipped = assembler.skipped
        return frame

    def _hca_series(self, grid: FloatArray, step: float) -> dict[str, list[RawSeries]]:
        """The fabric's series in one query (none when no node exporter runs its infiniband collector)."""
        if not self.hca_metrics:
            return {}
        out: dict[str, list[RawSeries]] = {}
        for s in self._series(hca_promql(self.hca_metrics), grid, step, keep_name=True):
            name = s.labels.get("__name__", "")
            if name in self.hca_metrics:
                out.setdefault(name, []).append(s)
        return out

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The raw `result` of one range query, with retries and translated errors."""
        began = datetime.fromtimestamp(start, tz=UTC)
        ended = datetime.fromtimestamp(end, tz=UTC)
        attempt = 0
        while True:
            try:
                result = self._client.custom_query_range(
                    query, began, ended, f"{step:g}", params={"timeout": f"{self.timeout_s:g}s"}
                )
            except (ValueError, KeyError, TypeError) as exc:  # not JSON, or JSON of another shape
                raise TelemetryBadResponse(
                    f"Prometheus at {self.url} answered {query!r} with something that is not a Prometheus "
                    f"API response ({exc.__class__.__name__}: {exc}); check that the URL points at Prometheus"
                ) from exc
            except (requests.RequestException, PrometheusApiClientException) as exc:
                translated = self._translate(exc, query)
                if not isinstance(translated, TelemetryUnavailable) or attempt >= self.retries:
                    raise translated from exc
                attempt += 1
                log.warning("telemetry: %s; retry %d/%d", translated, attempt, self.retries)
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            if not isinstance(result, list):
                raise TelemetryBadResponse(f"Prometheus at {self.url}: result of {query!r} is not a list")
            return result

    def _translate(self, exc: Exception, query: str) -> TelemetryError:
        if isinstance(exc, requests.Timeout):
            return TelemetryTimeout(
                f"Prometheus at {self.url} did not answer {query!r} within {self.timeout_s:g}s"
            )
        if isinstance(exc, requests.ConnectionError):
            return TelemetryUnavailable(f"cannot reach Prometheus at {self.url}: is it running? ({exc})")
        if isinstance(exc, requests.RequestException):
            return TelemetryError(f"cannot query Prometheus at {self.url}: {exc}")
        message = str(exc)
        status = _status_of(message)
        if status in TRANSIENT_STATUSES:
            return TelemetryUnavailable(
                f"Prometheus at {self.url} is temporarily unavailable: {message[:300]}"
            )
        if status in (400, 422):
            return TelemetryQueryError(f"Prometheus refused query {query!r}: {message[:300]}")
        return TelemetryBadResponse(
            f"Prometheus at {self.url} answered {query!r} with an error: {message[:300]}"
        )

    def _series(self, query: str, grid: FloatArray, step: float, *, keep_name: bool = False) -> list[RawSeries]:
        result = self.query_range(query, float(grid[0]), float(grid[-1]), step)
        out = []
        for item in result:
            try:
                labels = item["metric"]
                if not keep_name:
                    labels.pop("__name__", None)
                if not all(isinstance(v, str) for v in labels.values()):
                    raise TypeError("label values must be strings")
                values = _on_grid(item["values"], grid, step)
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                raise TelemetryBadResponse(
                    f"Prometheus at {self.url}: a series of {query!r} lacks metric/values ({exc})"
                ) from exc
            out.append(RawSeries(labels, values))
        return out


def _status_of(message: str) -> int | None:
    # prometheus-api-client reports non-200 answers as "HTTP Status Code 503 (b'...')".
    marker = "HTTP Status Code "
    if marker not in message:
        return None
    digits = message.split(marker, 1)[1][:3]
    return int(digits) if digits.isdigit() else None


def _on_grid(pairs: Sequence[Sequence[Any]], grid: FloatArray, step: float) -> FloatArray:
    """Place [timestamp, "value"] pairs on the grid; a value that is not a number becomes NaN."""
    n = len(grid)
    start = float(grid[0])
    if len(pairs) == n and float(pairs[0][0]) == start and float(pairs[-1][0]) == float(grid[-1]):
        try:  # the usual answer: one sample per grid time, all numbers
            return np.array([raw for _, raw in pairs], dtype=np.float64)
        except (TypeError, ValueError):
            pass
    out = np.full(n, np.nan)
    for ts, raw in pairs:
        index = round((float(ts) - start) / step)
        if 0 <= index < len(grid):
            try:
                out[index] = float(raw)
            except (TypeError, ValueError):
                log.warning("telemetry: sample %r at %s is not a number; left as NaN", raw, ts)
    return out
