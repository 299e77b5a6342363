"""The dashboard's sign-in, roles and CSRF over real HTTP (uvicorn on a free port) against the real PostgreSQL store:
each role signs in; a forged or missing CSRF token is refused with nothing changed; a viewer cannot decide; a stale
plan is refused; a decision is recorded with its user."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from gpuops.slack_notifier import budget_of
from gpuops.store.models import AuditEvent
from tests.web_server import (
    BUDGET,
    PASSWORDS,
    ROLES,
    WebServer,
    action_state,
    basic,
    csrf_of,
    seed_awaiting,
    serve,
    serve_on,
    sign_in,
    web_container,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url) as server:
        yield server


def decide_form(client: httpx.Client, incident_id: int, action_id: int, plan_hash: str, *, decision: str = "approve",
                token: str | None = "from-page", reason: str = "checked the DBE counts") -> httpx.Response:
    data = {"decision": decision, "plan_hash": plan_hash, "reason": reason}
    if token == "from-page":
        data["csrf_token"] = csrf_of(client.get(f"/incidents/{incident_id}").text)
    elif token is not None:
        data["csrf_token"] = token
    return client.post(f"/incidents/{incident_id}/actions/{action_id}/decision", data=data)


def test_without_sign_in_pages_redirect_and_the_api_answers_401(web: WebServer) -> None:
    page = httpx.get(f"{web.url}/fleet?x=1")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Ffleet%3Fx%3D1"
    api = httpx.get(f"{web.url}/api/incidents")
    assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{web.url}/events").status_code == 401
    assert httpx.get(f"{web.url}/api/openapi.json").status_code == 401
    wrong = httpx.get(f"{web.url}/api/me", headers={"Authorization": "Basic " + base64.b64encode(b"adam:no").decode()})
    assert wrong.status_code == 401
    assert httpx.get(f"{web.url}/healthz").status_code == 200  # open on purpose, for load balancers
    assert httpx.get(f"{web.url}/metrics").status_code == 200  # open on purpose, for Prometheus


@pytest.mark.parametrize("name", sorted(PASSWORDS))
def test_each_role_signs_in_reads_and_gets_a_safe_cookie(web: WebServer, name: str) -> None:
    with httpx.Client(base_url=web.url) as client:
        login = client.get("/login")
        response = client.post("/login", data={"csrf_token": csrf_of(login.text), "username": name,
                                               "password": PASSWORDS[name]})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        page = client.get("/")
        assert page.status_code == 200 and f'id="signed-in-as">{name}<' in page.text
        assert client.get("/api/me").json() == {"name": name, "role": ROLES[name], "via": "session"}
        for path in ("/fleet", "/audit", "/api/incidents", "/api/audit", "/api/fleet"):
            assert client.get(path).status_code == 200, path
    assert httpx.get(f"{web.url}/api/me", headers=basic(name)).json()["via"] == "basic"


def test_a_wrong_password_or_a_forged_sign_in_form_is_refused(web: WebServer) -> None:
    with httpx.Client(base_url=web.url) as client:
        token = csrf_of(client.get("/login").text)
        wrong = client.post("/login", data={"csrf_token": token, "username": "adam", "password": "guess"})
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        forged = client.post("/login", data={"csrf_token": "forged", "username": "adam",
                                             "password": PASSWORDS["adam"]})
        assert forged.status_code == 403
        assert client.get("/api/me").status_code == 401


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_forged_or_missing_csrf_is_refused_and_nothing_changes(web: WebServer, token: str | None) -> None:
    incident_id, action_id, plan_hash = seed_awaiting(web.container)
    before = action_state(web.container, action_id)
    with sign_in(web.url, "april") as client:
        response = decide_form(client, incident_id, action_id, plan_hash, token=token)
        assert response.status_code == 403 and "CSRF" in response.text
        api = client.post(f"/api/actions/{action_id}/approve", json={"plan_hash": plan_hash, "reason": "x"},
                          headers={"X-CSRF-Token": token} if token else {})
        assert api.status_code == 403
    assert action_state(web.container, action_id) == before == ("awaiting_approval", [], before[2])
    assert web.resumed == []


def test_a_cross_site_style_form_post_to_the_api_is_not_accepted(web: WebServer) -> None:
    """The API takes JSON only, so an HTML form elsewhere cannot post a decision with the user's cookie."""
    _, action_id, plan_hash = seed_awaiting(web.container)
    with sign_in(web.url, "april") as client:
        response = client.post(f"/api/actions/{action_id}/approve", data={"plan_hash": plan_hash, "reason": "x"})
        assert response.status_code in (403, 422)
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_a_viewer_sees_no_approve_button_and_cannot_decide(web: WebServer) -> None:
    incident_id, action_id, plan_hash = seed_awaiting(web.container)
    with sign_in(web.url, "vera") as client:
        page = client.get(f"/incidents/{incident_id}")
        assert page.status_code == 200 and 'value="approve"' not in page.text and "cannot decide" in page.text
        # the budget in the words of the action's Slack prompt
        for label, text in budget_of({"budget": BUDGET}):
            assert f"{label}: {text}" in page.text, label
        response = decide_form(client, incident_id, action_id, plan_hash)
        assert response.status_code == 403 and "vera is not allowed" in response.text
    api = httpx.post(f"{web.url}/api/actions/{action_id}/approve", headers=basic("vera"),
                     json={"plan_hash": plan_hash, "reason": "let me"})
    assert api.status_code == 403
    status, approvals, _ = action_state(web.container, action_id)
    assert (status, approvals) == ("awaiting_approval", [])
    with web.container.session_factory() as session:
        refusals = session.scalars(select(AuditEvent).where(AuditEvent.kind == "approval.refused")).all()
        assert [(r.actor, r.data["why"]) for r in refusals] == [("vera", "not_authorised")] * 2
    assert web.resumed == []


def test_a_decision_on_a_stale_plan_is_refused_and_shown(web: WebServer) -> None:
    incident_id, action_id, _ = seed_awaiting(web.container)
    with sign_in(web.url, "april") as client:
        response = decide_form(client, incident_id, action_id, "d" * 64)
        assert response.status_code == 303
        page = client.get(response.headers["location"])
        assert "Refused" in page.text and "plan changed" in page.text
    api = httpx.post(f"{web.url}/api/actions/{action_id}/approve", headers=basic("april"),
                     json={"plan_hash": "d" * 64, "reason": "ok"})
    assert api.status_code == 409 and "plan changed" in api.json()["detail"]
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_a_decision_is_recorded_with_its_user(web: WebServer) -> None:
    incident_id, action_id, plan_hash = seed_awaiting(web.container)
    with sign_in(web.url, "april") as client:
        response = decide_form(client, incident_id, action_id, plan_hash, reason="DBEs confirmed on GPU 2")
        assert response.status_code == 303
        page = client.get(response.headers["location"])
        assert "approved by april" in page.text
        assert 'class="decided-by">april<' in page.text and "DBEs confirmed on GPU 2" in page.text
    assert action_state(web.container, action_id)[:2] == ("approved", [("april", "dashboard", "approve")])
    assert web.resumed == [(incident_id, {"action_id": action_id, "decision": "approve", "by": "april"})]
    with web.container.session_factory() as session:
        approved = session.scalars(select(AuditEvent).where(AuditEvent.kind == "approval.approve")).one()
        assert approved.actor == "april" and approved.data["channel"] == "dashboard"

    other_incident, other_action, other_hash = seed_awaiting(web.container, host="gpu-node-004")
    api = httpx.post(f"{web.url}/api/actions/{other_action}/reject", headers=basic("adam"),
                     json={"plan_hash": other_hash, "reason": "wrong node"})
    assert api.status_code == 200
    assert api.json() | {"approvals": 0} == {
        "action_id": other_action, "incident_id": other_incident, "decision": "reject", "by": "adam",
        "status": "rejected", "approvals": 0, "approvals_required": 1, "duplicate": False}
    assert action_state(web.container, other_action)[:2] == ("rejected", [("adam", "dashboard", "reject")])


def test_a_session_api_post_with_the_csrf_header_is_accepted(web: WebServer) -> None:
    _, action_id, plan_hash = seed_awaiting(web.container)
    with sign_in(web.url, "adam") as client:
        token = csrf_of(client.get("/").text)
        response = client.post(f"/api/actions/{action_id}/approve", json={"plan_hash": plan_hash, "reason": "ok"},
                               headers={"X-CSRF-Token": token})
        assert response.status_code == 200 and response.json()["by"] == "adam"


def test_a_trusted_proxy_header_signs_users_in_with_their_mapped_role(sqlite_url: str) -> None:
    container = web_container(sqlite_url, trusted_proxy_header="X-Forwarded-User",
                              proxy_roles="pat:approver,*:viewer", session_cookie_secure=True)
    try:
        with serve(container) as web:
            def me(user: str | None) -> httpx.Response:
                return httpx.get(f"{web.url}/api/me", headers={"X-Forwarded-User": user} if user else {})

            assert me("pat").json() == {"name": "pat", "role": "approver", "via": "proxy"}
            assert me("someone").json()["role"] == "viewer"
            assert me(None).status_code == 401
            page = httpx.get(f"{web.url}/", headers={"X-Forwarded-User": "pat"})
            assert page.status_code == 200 and 'id="signed-in-as">pat<' in page.text
            assert "secure" in page.headers["set-cookie"].lower()
    finally:
        container.close()
