"""One exception tree for gpuops. Connectors translate vendor errors into these at their boundary;
the web app maps them to HTTP in one place. Messages say what to do next."""

from __future__ import annotations

from domain.errors import GpuopsError

__all__ = ["ConfigError", "Conflict", "GpuopsError", "NotFound", "StoreError"]


class ConfigError(GpuopsError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


class StoreError(GpuopsError):
    """The database could not be reached or refused a write."""


class NotFound(GpuopsError):
    """A requested object does not exist."""


class Conflict(GpuopsError):
    """The request conflicts with the current state (a stale plan, a duplicate decision)."""
