"""Incident ownership over HTTP (a real uvicorn, the real PostgreSQL store): who may do what (no sign-in: 401; a
viewer: 403, audited; an approver: done, with their name), CSRF on the dashboard's forms and on cookie-signed API
posts, notes escaped on the page, manual resolution, re-planning after a rejection, silences and maintenance
windows, and unknown filter values refused with the valid choices."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, AuditEvent, Incident
from tests.web_server import WebServer, basic, csrf_of, seed_awaiting, serve_on, sign_in

pytestmark = pytest.mark.postgres


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url) as server:
        yield server


def audited(web: WebServer, kind: str) -> list[AuditEvent]:
    with web.container.session_factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.seq)))


def incident(web: WebServer, incident_id: int) -> Incident:
    with web.container.session_factory() as session:
        found = session.get(Incident, incident_id)
        assert found is not None
        return found


def test_without_sign_in_every_ownership_operation_is_refused(web: WebServer) -> None:
    incident_id, _, _ = seed_awaiting(web.container)
    for path, body in [(f"/api/incidents/{incident_id}/ack", None), (f"/api/incidents/{incident_id}/notes",
                                                                      {"text": "x"}),
                       (f"/api/incidents/{incident_id}/resolve", {"reason": "x"}),
                       ("/api/silences", {"hostname": "gpu-node-001", "duration": "2h", "reason": "x"})]:
        assert httpx.post(web.url + path, json=body).status_code == 401, path
    assert httpx.get(web.url + "/api/silences").status_code == 401
    form = httpx.post(f"{web.url}/incidents/{incident_id}/ack", data={}, follow_redirects=False)
    assert form.status_code == 303 and "/login" in form.headers["location"]
    assert incident(web, incident_id).acknowledged_at is None


def test_a_viewer_cannot_acknowledge_and_an_approver_can(web: WebServer) -> None:
    incident_id, _, _ = seed_awaiting(web.container)
    refused = httpx.post(f"{web.url}/api/incidents/{incident_id}/ack", headers=basic("vera"))
    assert refused.status_code == 403 and "GPUOPS_USERS" in refused.json()["detail"]
    assert [(e.actor, e.data["what"]) for e in audited(web, "ownership.refused")] == [("vera", "acknowledge incidents")]
    assert incident(web, incident_id).acknowledged_at is None
    done = httpx.post(f"{web.url}/api/incidents/{incident_id}/ack", headers=basic("april"))
    assert done.status_code == 200 and done.json()["acknowledged_by"] == "april" and done.json()["changed"]
    summary = httpx.get(f"{web.url}/api/incidents/{incident_id}", headers=basic("vera")).json()
    assert summary["acknowledged_by"] == "april"
    assert [e.actor for e in audited(web, "incident.acknowledged")] == ["april"]


def test_forms_need_the_csrf_token_and_notes_are_escaped_on_the_page(web: WebServer) -> None:
    incident_id, _, _ = seed_awaiting(web.container)
    note = "<img src=x onerror=alert(1)> checked the PSU"
    with sign_in(web.url, "april") as client:
        page = client.get(f"/incidents/{incident_id}")
        assert page.status_code == 200 and 'id="ownership"' in page.text
        token = csrf_of(page.text)
        assert client.post(f"/incidents/{incident_id}/notes", data={"text": note}).status_code == 403
        assert client.post(f"/incidents/{incident_id}/notes",
                           data={"text": note, "csrf_token": "guess"}).status_code == 403
        # a cookie-signed API post needs the session's token in its header
        assert client.post(f"/api/incidents/{incident_id}/notes", json={"text": note}).status_code == 403
        posted = client.post(f"/incidents/{incident_id}/notes", data={"text": note, "csrf_token": token})
        assert posted.status_code == 303
        assigned = client.post(f"/incidents/{incident_id}/assign", data={"assignee": "adam", "csrf_token": token})
        assert assigned.status_code == 303
        page = client.get(f"/incidents/{incident_id}").text
    assert "&lt;img src=x onerror=alert(1)&gt; checked the PSU" in page and "<img src=x" not in page
    assert 'id="ownership-assignee">adam<' in page
    [event] = audited(web, "incident.note")
    assert (event.actor, event.data["text"], event.data["channel"]) == ("april", note, "dashboard")


def test_resolving_by_hand_expires_the_pending_action_and_needs_a_reason(web: WebServer) -> None:
    incident_id, action_id, _ = seed_awaiting(web.container)
    url = f"{web.url}/api/incidents/{incident_id}/resolve"
    assert httpx.post(url, json={"reason": "   "}, headers=basic("adam")).status_code == 400
    assert httpx.post(url, json={}, headers=basic("adam")).status_code == 422
    resolved = httpx.post(url, json={"reason": "the GPU was replaced by hand"}, headers=basic("adam"))
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["stopped_actions"] == [action_id] and resolved.json()["status"] == "resolved"
    with web.container.session_factory() as session:
        action = session.get(Action, action_id)
        assert action is not None and action.status == "expired"
    late = httpx.post(f"{web.url}/api/actions/{action_id}/approve", json={"plan_hash": "c" * 64, "reason": "ok"},
                      headers=basic("april"))
    assert late.status_code == 409


def test_replan_after_a_rejection_hands_the_incident_back_to_the_agent(web: WebServer) -> None:
    incident_id, action_id, plan_hash = seed_awaiting(web.container)
    replan = f"{web.url}/api/incidents/{incident_id}/replan"
    early = httpx.post(replan, json={"reason": "try again"}, headers=basic("april"))
    assert early.status_code == 409 and "no rejected action" in early.json()["detail"]
    rejected = httpx.post(f"{web.url}/api/actions/{action_id}/reject",
                          json={"plan_hash": plan_hash, "reason": "the job checkpoints in 10 minutes"},
                          headers=basic("april"))
    assert rejected.status_code == 200
    assert httpx.post(replan, json={"reason": "wait"}, headers=basic("vera")).status_code == 403
    done = httpx.post(replan, json={"reason": "drain after the checkpoint"}, headers=basic("adam"))
    assert done.status_code == 200, done.text
    assert web.resumed[-1] == (incident_id, {})  # a new agent run of the incident (start, not resume)
    details = incident(web, incident_id).details["replan"]
    assert details["rejected"][0]["runbook"] == "drain_node" and details["requested_by"] == "adam"
    assert "the job checkpoints" in details["rejected"][0]["reason"]


def test_silences_and_maintenance_windows_through_the_api_and_the_page(web: WebServer) -> None:
    api = f"{web.url}/api/silences"
    made = httpx.post(api, json={"kind": "maintenance", "hostname": "gpu-node-004", "duration": "2h",
                                 "reason": "PSU swap"}, headers=basic("april"))
    assert made.status_code == 200, made.text
    window = made.json()
    assert (window["state"], window["created_by"], window["kind"]) == ("active", "april", "maintenance")
    nameless = httpx.post(api, json={"kind": "maintenance", "duration": "2h", "reason": "x"}, headers=basic("april"))
    assert nameless.status_code == 400 and "hostname" in nameless.json()["detail"]
    assert httpx.post(api, json={"hostname": "gpu-node-001", "duration": "2h", "reason": "x"},
                      headers=basic("vera")).status_code == 403
    bad_filter = httpx.get(api, params={"state": "asleep"}, headers=basic("vera"))
    assert bad_filter.status_code == 422 and "active" in bad_filter.text and "expired" in bad_filter.text

    with sign_in(web.url, "adam") as client:
        page = client.get("/silences")
        assert page.status_code == 200 and "gpu-node-004" in page.text and 'href="/silences"' in page.text
        token = csrf_of(page.text)
        created = client.post("/silences", data={"kind": "silence", "family": "thermal", "duration": "30m",
                                                 "reason": "cooling work", "csrf_token": token})
        assert created.status_code == 303
        assert client.post(f"/silences/{window['id']}/expire", data={}).status_code == 403
        assert client.post(f"/silences/{window['id']}/expire", data={"csrf_token": token}).status_code == 303
        page = client.get("/silences").text
    assert "Silence" in page and "cooling work" in page
    rows = httpx.get(api, headers=basic("vera")).json()
    assert [(r["kind"], r["state"]) for r in rows] == [("silence", "active"), ("maintenance", "expired")]
    assert rows[1]["expired_by"] == "adam"
    assert [e.actor for e in audited(web, "maintenance.expired")] == ["adam"]
    with web.container.session_factory() as session:
        assert verify_chain(session).ok


def test_an_unknown_incident_filter_is_refused_with_the_valid_choices(web: WebServer) -> None:
    with sign_in(web.url, "vera") as client:
        page = client.get("/", params={"status": "sleeping"})
    assert page.status_code == 400 and "escalated" in page.text and "sleeping" in page.text
    api = httpx.get(f"{web.url}/api/incidents", params={"status": "sleeping"}, headers=basic("vera"))
    assert api.status_code == 422 and "escalated" in api.text
