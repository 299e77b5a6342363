"""Streaming anomaly models (filled in below)."""

from __future__ import annotations

from detectors.rules import Stage


def default_anomaly_stages() -> list[Stage]:
    return []
