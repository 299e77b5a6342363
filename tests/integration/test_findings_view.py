"""Findings are visible (issue 20): `/api/findings` and the `/findings` page list what the detectors found,
newest first, filtered by node, GPU, kind and incident, with their evidence; the fleet page links an amber GPU
(findings, no incident) to its findings, and an incident page links to the findings behind it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gpuops.store.models import FindingRecord, Incident
from tests.web_server import PASSWORDS, WebServer, serve, sign_in, web_container

pytestmark = pytest.mark.postgres
NOW = datetime.now(tz=UTC)


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    container = web_container(postgres_url)
    with container.uow() as uow:
        incident = Incident(dedup_key="k", scope="gpu", family="thermal", hostname="gpu-node-001", gpu=1,
                            severity="warning", title="hot", status="open", opened_at=NOW, updated_at=NOW)
        uow.session.add(incident)
        uow.session.flush()
        for minutes, host, gpu, kind, incident_id in [(30, "gpu-node-001", 1, "thermal", incident.id),
                                                      (20, "gpu-node-001", 1, "thermal", incident.id),
                                                      (10, "gpu-node-002", 3, "straggler", None)]:
            uow.session.add(FindingRecord(
                ts=NOW - timedelta(minutes=minutes), hostname=host, gpu=gpu, kind=kind, severity="warning",
                score=0.8, detector=f"{kind}.rule", incident_id=incident_id,
                evidence={"temp_c": 91.5, "peer_median_c": 70.25, "corroborated": True, "signals": ["a", "b"]}))
        uow.commit()
    try:
        with serve(container) as server:
            yield server
    finally:
        container.close()


def _viewer() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"vera:{PASSWORDS['vera']}".encode()).decode()}


def test_the_api_lists_findings_newest_first_and_filters_them(web: WebServer) -> None:
    every = httpx.get(f"{web.url}/api/findings", headers=_viewer(), timeout=10).json()
    assert [(f["hostname"], f["kind"]) for f in every] == [("gpu-node-002", "straggler"),
                                                          ("gpu-node-001", "thermal"), ("gpu-node-001", "thermal")]
    assert every[1]["evidence"]["temp_c"] == 91.5 and every[1]["incident_id"] is not None
    one_gpu = httpx.get(f"{web.url}/api/findings", params={"node": "gpu-node-001", "gpu": 1}, headers=_viewer(),
                        timeout=10).json()
    assert len(one_gpu) == 2 and {f["kind"] for f in one_gpu} == {"thermal"}
    paged = httpx.get(f"{web.url}/api/findings", params={"limit": 1, "before": every[0]["id"]}, headers=_viewer(),
                      timeout=10).json()
    assert [f["id"] for f in paged] == [every[1]["id"]]
    by_incident = httpx.get(f"{web.url}/api/findings", params={"incident_id": every[1]["incident_id"]},
                            headers=_viewer(), timeout=10).json()
    assert len(by_incident) == 2


@pytest.mark.parametrize("query", ["gpu=-1", "node=a%20b", "kind=DROP%20TABLE", "limit=0"])
def test_bad_filters_are_a_422(web: WebServer, query: str) -> None:
    assert httpx.get(f"{web.url}/api/findings?{query}", headers=_viewer(), timeout=10).status_code == 422


def test_the_page_shows_evidence_in_words_and_links_both_ways(web: WebServer) -> None:
    with sign_in(web.url, "vera") as client:
        page = client.get("/findings", params={"node": "gpu-node-001", "gpu": "1"})
        assert page.status_code == 200
        assert page.text.count("data-finding=") == 2 and "gpu-node-002" not in page.text.split("<table")[1]
        assert "temp c: 91.5" in page.text and "peer median c: 70.25" in page.text
        incident_id = httpx.get(f"{web.url}/api/findings", headers=_viewer(), timeout=10).json()[1]["incident_id"]
        assert f'href="/incidents/{incident_id}"' in page.text
        assert f'href="/findings?incident={incident_id}"' in client.get(f"/incidents/{incident_id}").text
        assert client.get("/findings", params={"kind": "nothing"}).text.count("No findings match") == 1
        # an amber GPU (findings, no incident) on the fleet page says why through its findings
        assert 'href="/findings?node=gpu-node-002&amp;gpu=3"' in client.get("/fleet").text
