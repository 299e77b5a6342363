"""The telemetry port: FleetFrames from Prometheus or from exporters scraped directly, plus a fake."""

from connectors.telemetry.errors import (
    TelemetryBadResponse,
    TelemetryError,
    TelemetryQueryError,
    TelemetryTimeout,
    TelemetryUnavailable,
)
from connectors.telemetry.fake import InMemoryTelemetry
from connectors.telemetry.port import (
    DEFAULT_GPU_METRICS,
    DEFAULT_HCA_METRICS,
    DEFAULT_NODE_SERIES,
    FrameAssembler,
    NodeSeries,
    RawSeries,
    TelemetrySource,
    time_grid,
)
from connectors.telemetry.prometheus import PrometheusTelemetry
from connectors.telemetry.scrape import ScrapeTelemetry

__all__ = [
    "DEFAULT_GPU_METRICS",
    "DEFAULT_HCA_METRICS",
    "DEFAULT_NODE_SERIES",
    "FrameAssembler",
    "InMemoryTelemetry",
    "NodeSeries",
    "PrometheusTelemetry",
    "RawSeries",
    "ScrapeTelemetry",
    "TelemetryBadResponse",
    "TelemetryError",
    "TelemetryQueryError",
    "TelemetrySource",
    "TelemetryTimeout",
    "TelemetryUnavailable",
    "time_grid",
]
