"""The incident and audit pages over HTTP (uvicorn, the real PostgreSQL store): an incident with no evidence kept
(one from before snapshots, or a detection-only install) still renders and says what it does not know; stored
text keeps its characters instead of JSON escapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gpuops.store.audit import append_event
from gpuops.store.models import Incident
from tests.web_server import WebServer, serve_on, sign_in

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url) as server:
        yield server


def test_an_incident_without_evidence_or_plan_says_so(web: WebServer) -> None:
    now = datetime.now(tz=UTC)
    with web.container.uow() as uow:
        incident = Incident(dedup_key="gpu-node-005/1/thermal", scope="gpu", family="thermal", hostname="gpu-node-005",
                            gpu=1, severity="warning", status="open", title="GPU 1 running hot", opened_at=now,
                            updated_at=now, summary="temperature_c=91.5 for_s=600")
        uow.session.add(incident)
        uow.commit()
        incident_id = incident.id
    with sign_in(web.url, "vera") as client:
        html = client.get(f"/incidents/{incident_id}").text
    assert "GPU 1 of gpu-node-005: running hot" in html
    assert "temperature c: 91.5 for: 10 min" in html  # key=value pairs in words, seconds as a duration
    assert "Unknown: no workload was recorded for this incident" in html
    assert "No plan yet." in html
    assert "no telemetry source configured" in html  # nothing kept, nothing live: the charts say why


def test_the_audit_page_shows_stored_text_as_written(web: WebServer) -> None:
    with web.container.uow() as uow:
        append_event(uow.session, actor="rules", kind="agent.plan", data={"why": "cordon_node → drain_node"})
        uow.commit()
    with sign_in(web.url, "adam") as client:
        html = client.get("/audit").text
    assert "cordon_node → drain_node" in html and "\\u2192" not in html
    assert "UTC" in html
