"""The root of gpuops' one exception tree, here so that every part (the core, the runbooks, the connectors)
raises under it without importing the core. Connectors translate vendor errors into it at their boundary."""

from __future__ import annotations


class GpuopsError(Exception):
    """Base of every error gpuops raises on purpose."""
