"""The errors a task retries on (transient: the outside world will likely answer again soon). Everything
else is a bug or bad data: retrying would not help, so the message goes to the dead letters."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError

from connectors.kubernetes.errors import ClusterUnavailable
from connectors.telemetry.errors import TelemetryTimeout, TelemetryUnavailable
from gpuops.errors import GpuopsError, StoreError

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    StoreError,
    OperationalError,
    InterfaceError,
    TelemetryUnavailable,
    TelemetryTimeout,
    ClusterUnavailable,
)


class PoisonMessage(GpuopsError):
    """A message whose payload does not validate; it is dead-lettered and acknowledged, never retried."""
