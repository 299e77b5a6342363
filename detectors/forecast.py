"""Failure forecasts (filled in below)."""

from __future__ import annotations

from detectors.rules import Stage


def default_forecast_stages() -> list[Stage]:
    return []
