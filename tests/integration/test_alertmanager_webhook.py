"""POST /api/alertmanager over HTTP: off (404) without GPUOPS_ALERTMANAGER_TOKEN; a missing or forged bearer token
is refused (401) and audited before the body is read; a malformed payload is 422 naming what is wrong; and end to
end with the real Prometheus and the real Alertmanager: a rule fires on the twin's telemetry, Alertmanager posts,
an incident opens; the GPU is replaced, the alert resolves, the incident follows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gpuops.store.models import AuditEvent, Incident
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin
from tests.alertmanager_server import running_alertmanager
from tests.prometheus_server import running_prometheus
from tests.sim_server import serving
from tests.waiting import wait_for
from tests.web_server import WebServer, serve, serve_on, web_container

TOKEN = "am-token-0123456789abcdef"
FIRING: dict[str, Any] = {
    "version": "4", "receiver": "gpuops", "status": "firing", "groupKey": "{}:{alertname=\"GPUXidError\"}",
    "alerts": [{"status": "firing", "labels": {"alertname": "GPUXidError", "Hostname": "gpu-node-001", "gpu": "2",
                                               "severity": "critical"},
                "annotations": {"summary": "XID 79"}, "startsAt": "2026-06-01T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "0a1b2c3d4e5f6789"}]}


@pytest.fixture
def web(sqlite_url: str) -> Iterator[WebServer]:
    with serve_on(sqlite_url, alertmanager_token=TOKEN, sign_in_max_failures=6) as server:
        yield server


def refusals(web: WebServer) -> list[dict[str, Any]]:
    with web.container.session_factory() as session:
        return [e.data for e in session.scalars(select(AuditEvent).where(AuditEvent.kind == "alertmanager.refused"))]


def open_incidents(web: WebServer) -> list[Incident]:
    with web.container.session_factory() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


def test_without_a_token_setting_the_receiver_is_off(sqlite_url: str) -> None:
    container = web_container(sqlite_url)
    try:
        with serve(container) as server:
            answer = httpx.post(f"{server.url}/api/alertmanager", json=FIRING,
                                headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        container.close()
    assert answer.status_code == 404 and "GPUOPS_ALERTMANAGER_TOKEN" in answer.json()["detail"]


def test_missing_or_forged_tokens_are_refused_and_audited(web: WebServer) -> None:
    url = f"{web.url}/api/alertmanager"
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        answer = httpx.post(url, json=FIRING, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    forged = httpx.post(url, content=b"{not json", headers={"Authorization": "Bearer wrong"})
    assert forged.status_code == 401  # the token is checked before the body is read
    assert [r["reason"] for r in refusals(web)] == ["no bearer token", "wrong bearer token", "no bearer token",
                                                    "wrong bearer token", "wrong bearer token"]
    assert open_incidents(web) == []
    httpx.post(url, json=FIRING, headers={"Authorization": "Bearer wrong"})  # the sixth: the client is locked out
    locked = httpx.post(url, json=FIRING, headers={"Authorization": f"Bearer {TOKEN}"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert len(refusals(web)) == 6 and refusals(web)[-1]["locked_out_s"] > 0  # the lockout itself is not audited


def test_a_malformed_payload_is_422_saying_what_is_wrong(web: WebServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for body, expected in ((b"{not json", "json"), (b'{"version": "3"}', "version"),
                           (b'{"version": "4", "receiver": "r", "status": "firing", "alerts": [{}]}', "alerts.0")):
        answer = httpx.post(f"{web.url}/api/alertmanager", content=body, headers=auth)
        assert answer.status_code == 422, body
        assert expected in answer.json()["detail"].lower(), answer.json()


def test_a_valid_webhook_opens_an_incident_and_a_repeat_adds_nothing(web: WebServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = httpx.post(f"{web.url}/api/alertmanager", json=FIRING, headers=auth)
    assert first.status_code == 200, first.text
    (incident,) = open_incidents(web)
    assert first.json()["opened"] == [incident.id] and incident.family == "xid" and incident.hostname == \
        "gpu-node-001" and incident.gpu == 2
    again = httpx.post(f"{web.url}/api/alertmanager", json=FIRING, headers=auth).json()
    assert again["duplicates"] == 1 and again["opened"] == [] and len(open_incidents(web)) == 1


DBE_RULE = {"name": "gpu", "rules": [{
    "alert": "GPUDoubleBitError", "expr": "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0", "for": "0s",
    "labels": {"severity": "critical"},
    "annotations": {"summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has double-bit ECC errors"}}]}


@pytest.mark.prometheus
@pytest.mark.alertmanager
def test_a_rule_on_the_twin_fires_through_alertmanager_and_resolves(web: WebServer, tmp_path: Path) -> None:
    twin = Twin(scenario_from_dict({
        "name": "am", "seed": 3, "start": float(int(time.time()) - 600), "fleet": {"nodes": 2, "gpus_per_node": 4},
        "duration": "1h", "step": "15s", "faults": [{"kind": "xid48_dbe", "node": "gpu-node-002", "gpu": 1,
                                                     "at": "1m"}]}))
    with serving(build_app(twin, with_kubernetes=False)) as twin_url, \
            running_alertmanager(tmp_path / "am", webhook_url=f"{web.url}/api/alertmanager", token=TOKEN) as am, \
            running_prometheus(tmp_path / "prom", [twin_url.removeprefix("http://")], scrape_interval="500ms",
                               rules=[DBE_RULE], alertmanagers=[am.address]):
        started = time.monotonic()
        twin.advance_to(twin.t + 120)  # past the fault's onset: the DBE counter is 1 on gpu-node-002 GPU 1

        def opened() -> Incident | None:
            return next((i for i in open_incidents(web) if i.status == "open"), None)

        incident = wait_for(opened, timeout=60, interval=0.2,
                            message=lambda: f"no incident from Alertmanager; its log:\n"
                                            f"{am.log.read_text()[-2000:]}")
        fired_s = time.monotonic() - started
        assert (incident.hostname, incident.gpu, incident.family, incident.severity) == \
            ("gpu-node-002", 1, "ecc", "critical")
        assert incident.title == "ecc on gpu-node-002 GPU 1"
        twin.replace_gpu("gpu-node-002", 1)  # a technician swaps the board: counters restart at 0

        def resolved() -> bool:
            return [i.status for i in open_incidents(web)] == ["resolved"]

        wait_for(resolved, timeout=60, interval=0.2,
                 message=lambda: f"incidents {[(i.id, i.status) for i in open_incidents(web)]}; Alertmanager's "
                                 f"log:\n{am.log.read_text()[-2000:]}")
        print(f"alert to incident {fired_s:.1f}s; to resolution {time.monotonic() - started - fired_s:.1f}s")
    assert refusals(web) == []
