"""The web service under attack from the network (issue 16): password guessing is throttled per user and per
client, password checks are bounded, oversized bodies are refused before parsing or authentication, a session
ends on logout for good, a decision names the right incident, event streams are capped per user, an unsigned
Slack body is refused before it is parsed, undecodable JSON is a 422, and configuration errors hide secrets."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from entrypoints.web.app import create_app
from gpuops.config import load_settings
from gpuops.errors import ConfigError
from gpuops.pipeline import Pipeline
from gpuops.store.models import AuditEvent
from gpuops.wiring import Container
from tests.waiting import wait_for
from tests.web_server import (
    PASSWORDS,
    ResumeRecorder,
    WebServer,
    action_state,
    csrf_of,
    seed_awaiting,
    serve_on,
    sign_in,
    web_container,
)

pytestmark = pytest.mark.postgres
LIMITS: dict[str, Any] = {"sign_in_max_failures": 3, "sign_in_max_failures_per_client": 5,
                          "sign_in_window_seconds": 600, "max_body_bytes": 64 * 1024,
                          "event_streams_per_user": 2}


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url, **LIMITS) as server:
        yield server


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def audited(container: Container, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    with container.session_factory() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.kind.startswith(prefix)).order_by(AuditEvent.seq))
        return [(e.kind, dict(e.data)) for e in rows]


def test_basic_guessing_locks_the_user_out_with_retry_after_and_is_audited(web: WebServer) -> None:
    for _ in range(3):
        assert httpx.get(f"{web.url}/api/me", headers=basic("adam", "guess")).status_code == 401
    locked = httpx.get(f"{web.url}/api/me", headers=basic("adam", PASSWORDS["adam"]))
    assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 600
    # another user from the same client is not locked out (the per-client limit is higher)
    assert httpx.get(f"{web.url}/api/me", headers=basic("vera", PASSWORDS["vera"])).status_code == 200
    kinds = [kind for kind, _ in audited(web.container, "auth.")]
    assert kinds == ["auth.failed"] * 3 + ["auth.locked_out"]
    failed = audited(web.container, "auth.failed")[0][1]
    assert failed["user"] == "adam" and failed["client"] == "127.0.0.1" and "guess" not in str(failed)


def test_sign_in_form_guessing_from_one_client_is_throttled_across_user_names(web: WebServer) -> None:
    with httpx.Client(base_url=web.url) as client:
        token = csrf_of(client.get("/login").text)
        for i in range(5):
            wrong = client.post("/login", data={"csrf_token": token, "username": f"nobody{i}", "password": "x"})
            assert wrong.status_code == 401
        locked = client.post("/login", data={"csrf_token": token, "username": "april",
                                             "password": PASSWORDS["april"]})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    lockouts = audited(web.container, "auth.locked_out")
    assert [data["scope"] for _, data in lockouts] == ["client"]


def test_password_checks_beyond_the_bound_are_refused_at_once(postgres_url: str) -> None:
    container = web_container(postgres_url, password_checks_max=1)
    try:
        app = create_app(container, pipeline=Pipeline(container, ResumeRecorder([])))
        slots = app.state.directory.slots
        assert slots.acquire(blocking=False)  # one check in flight holds the only slot
        try:
            with TestClient(app) as client:
                busy = client.get("/api/me", headers=basic("adam", PASSWORDS["adam"]))
                assert busy.status_code == 503 and "retry-after" in busy.headers
        finally:
            slots.release()
        with TestClient(app) as client:
            assert client.get("/api/me", headers=basic("adam", PASSWORDS["adam"])).status_code == 200
    finally:
        container.close()


def test_an_oversized_body_is_refused_before_authentication(web: WebServer) -> None:
    big = b'{"plan_hash": "ab", "reason": "' + b"x" * (200 * 1024) + b'"}'
    declared = httpx.post(f"{web.url}/api/actions/1/approve", content=big,
                          headers={"Content-Type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 16 * 1024):
            yield big[start:start + 16 * 1024]

    streamed = httpx.post(f"{web.url}/api/actions/1/approve", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    small = httpx.post(f"{web.url}/api/actions/1/approve", json={"plan_hash": "ab", "reason": "x"})
    assert small.status_code == 401


def test_a_session_cookie_copied_before_logout_is_refused_after(web: WebServer) -> None:
    with sign_in(web.url, "adam") as client:
        copied = dict(client.cookies)
        token = csrf_of(client.get("/").text)
        assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    replay = httpx.get(f"{web.url}/api/me", cookies=copied)
    assert replay.status_code == 401


def test_a_decision_under_another_incident_is_refused_and_changes_nothing(web: WebServer) -> None:
    _, action_id, plan_hash = seed_awaiting(web.container)
    other_incident, _, _ = seed_awaiting(web.container, host="gpu-node-004")
    before = action_state(web.container, action_id)
    with sign_in(web.url, "april") as client:
        token = csrf_of(client.get(f"/incidents/{other_incident}").text)
        response = client.post(f"/incidents/{other_incident}/actions/{action_id}/decision",
                                data={"decision": "approve", "plan_hash": plan_hash, "reason": "ok",
                                      "csrf_token": token})
        assert response.status_code == 404
    assert action_state(web.container, action_id) == before


def test_event_streams_are_capped_per_user(web: WebServer) -> None:
    with sign_in(web.url, "vera") as client, \
            client.stream("GET", "/events") as first, client.stream("GET", "/events") as second:
        assert first.status_code == second.status_code == 200
        third = client.get("/events")
        assert third.status_code == 429 and "retry-after" in third.headers
        with sign_in(web.url, "adam") as other, other.stream("GET", "/events") as theirs:
            assert theirs.status_code == 200
    with sign_in(web.url, "vera") as client:
        def reopens() -> bool:
            with client.stream("GET", "/events") as again:
                return again.status_code == 200

        wait_for(reopens, timeout=10, message="closed streams were not given back")


def test_an_unsigned_slack_body_is_refused_before_it_is_parsed(sqlite_url: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    container = web_container(sqlite_url, slack_signing_secret="shh", slack_bot_token="xoxb-test",
                              slack_api_url="http://127.0.0.1:9/api/")
    try:
        app = create_app(container, pipeline=Pipeline(container, ResumeRecorder([])))
        with caplog.at_level(logging.WARNING), TestClient(app) as client:
            response = client.post("/slack/events", content=b"payload=x",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
            flood = client.post("/slack/events", content=b"payload=" + b"x" * (2 * 1024 * 1024),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 401 and flood.status_code == 413
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    finally:
        container.close()


@pytest.mark.parametrize("body", [b'{"plan_hash": "ab", "reason": "\\ud800"}', b'{"plan_hash": "ab", "reason": "\xff"}',
                                  b'{"plan_hash": "\\udfff"}'])
def test_undecodable_json_is_a_422(web: WebServer, body: bytes) -> None:
    _, action_id, _ = seed_awaiting(web.container)
    response = httpx.post(f"{web.url}/api/actions/{action_id}/approve", content=body,
                          headers={"Content-Type": "application/json", **basic("adam", PASSWORDS["adam"])})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(("env", "secret"), [
    ({"GPUOPS_DATABASE_URL": "mysql://ops:hunter2@db.example:3306/gpuops"}, "hunter2"),
    ({"GPUOPS_BROKER_URL": "amqp://ops:hunter2@mq.example/"}, "hunter2"),
    ({"GPUOPS_PROMETHEUS_URL": "prom.example/?token=hunter2"}, "hunter2"),
    ({"GPUOPS_KUBE_API_URL": "kube.example:6443?access_token=hunter2"}, "hunter2"),
    ({"GPUOPS_DATABASE_URL": "postgresql+psycopg://ops:hunter2@db.example:notaport/gpuops"}, "hunter2"),
])
def test_configuration_errors_never_show_a_secret(env: dict[str, str], secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert secret not in message and next(iter(env)) in message, message
