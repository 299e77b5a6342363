"""Grafana and runbook-documentation links built from settings and an incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from entrypoints.web.links import grafana_url, runbook_doc_url
from gpuops.config import load_settings
from gpuops.errors import ConfigError


@dataclass
class _Incident:
    opened_at: datetime
    resolved_at: datetime | None
    hostname: str | None
    gpu: int | None


OPENED = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
RESOLVED = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)


def test_no_grafana_url_means_no_link() -> None:
    assert grafana_url(load_settings({}), _Incident(OPENED, RESOLVED, "gpu-node-001", 3)) is None


def test_resolved_incident_range_with_margin_node_and_gpu() -> None:
    settings = load_settings({"GPUOPS_GRAFANA_URL": "https://grafana.example.com/",
                              "GPUOPS_GRAFANA_DASHBOARD_UID": "dcgm-1", "GPUOPS_GRAFANA_MARGIN_SECONDS": "600"})
    url = grafana_url(settings, _Incident(OPENED, RESOLVED, "gpu-node-001", 3))
    assert url is not None
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "grafana.example.com", "/d/dcgm-1")
    query = parse_qs(parts.query)
    assert int(query["from"][0]) == int(OPENED.timestamp() * 1000) - 600_000
    assert int(query["to"][0]) == int(RESOLVED.timestamp() * 1000) + 600_000
    assert query["var-node"] == ["gpu-node-001"]
    assert query["var-gpu"] == ["3"]


def test_open_fleet_incident_runs_until_now_without_node_or_gpu() -> None:
    settings = load_settings({"GPUOPS_GRAFANA_URL": "http://grafana:3000", "GPUOPS_GRAFANA_MARGIN_SECONDS": "0"})
    now = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)
    url = grafana_url(settings, _Incident(OPENED, None, None, None), now=now)
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert int(query["to"][0]) == int(now.timestamp() * 1000)
    assert "var-node" not in query and "var-gpu" not in query
    assert urlsplit(url).path == "/d/gpuops-fleet"


def test_gpu_zero_is_a_gpu() -> None:
    settings = load_settings({"GPUOPS_GRAFANA_URL": "http://grafana:3000"})
    url = grafana_url(settings, _Incident(OPENED, RESOLVED, "gpu-node-002", 0))
    assert url is not None and parse_qs(urlsplit(url).query)["var-gpu"] == ["0"]


@pytest.mark.parametrize(("env", "needle"), [
    ({"GPUOPS_GRAFANA_URL": "grafana.example.com"}, "GPUOPS_GRAFANA_URL"),
    ({"GPUOPS_GRAFANA_DASHBOARD_UID": "bad uid/x"}, "GPUOPS_GRAFANA_DASHBOARD_UID"),
    ({"GPUOPS_GRAFANA_MARGIN_SECONDS": "-1"}, "GPUOPS_GRAFANA_MARGIN_SECONDS"),
])
def test_bad_grafana_settings_are_named(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env)


def test_runbook_doc_url() -> None:
    assert runbook_doc_url("drain_node") == "/runbooks/drain_node"
    assert runbook_doc_url("a/b") == "/runbooks/a%2Fb"
