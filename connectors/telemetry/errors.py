"""The telemetry port's exception tree: adapters translate every vendor error into one of these."""

from __future__ import annotations


class TelemetryError(Exception):
    """Telemetry could not be read."""


class TelemetryUnavailable(TelemetryError):
    """The source did not answer (down, refused, timed out) after the configured retries."""


class TelemetryTimeout(TelemetryUnavailable):
    """The source did not answer within the timeout."""


class TelemetryBadResponse(TelemetryError):
    """The source answered, but not with what its protocol promises (garbage, error status, odd shape)."""


class TelemetryQueryError(TelemetryBadResponse):
    """The source refused the query itself (bad PromQL, too many samples)."""
