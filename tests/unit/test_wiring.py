from __future__ import annotations

import pytest

from connectors.telemetry import InMemoryTelemetry, PrometheusTelemetry, ScrapeTelemetry
from gpuops.config import Settings
from gpuops.errors import ConfigError
from gpuops.wiring import bootstrap
from tests.unit import det_synth


def test_bootstrap_connects_to_nothing_and_names_a_missing_telemetry_source() -> None:
    container = bootstrap(Settings(database_url="sqlite://", kube_api_url="http://127.0.0.1:9"))
    try:
        assert container._cluster is None and container._telemetry is None  # nothing built at start-up
        with pytest.raises(ConfigError, match=r"GPUOPS_PROMETHEUS_URL.*GPUOPS_SCRAPE_URLS"):
            _ = container.telemetry
    finally:
        container.close()


@pytest.mark.parametrize(("settings", "kind"), [
    ({"prometheus_url": "http://127.0.0.1:9090"}, PrometheusTelemetry),
    ({"scrape_urls": ("http://127.0.0.1:9400/metrics",)}, ScrapeTelemetry),
])
def test_telemetry_source_follows_the_settings(settings: dict[str, object], kind: type) -> None:
    container = bootstrap(Settings(database_url="sqlite://", **settings))  # type: ignore[arg-type]
    try:
        assert isinstance(container.telemetry, kind)
    finally:
        container.close()


def test_tests_hand_their_own_ports_to_the_same_wiring() -> None:
    ts, met, gpus, nodes, nm = det_synth.healthy(nodes=1, gpus_per_node=2, steps=5)
    fake = InMemoryTelemetry(det_synth.frame(ts, met, gpus, nodes, nm))
    container = bootstrap(Settings(database_url="sqlite://"), telemetry=fake)
    try:
        assert container.telemetry is fake
        assert "drain_node" in container.catalogue.names()
    finally:
        container.close()
