"""The dashboard served by a real uvicorn on a free loopback port, in a thread, with users of each role and a
pipeline whose dispatcher records the agent steps a decision hands on (the agent is not what these tests
exercise); plus store seeding shared by the web tests."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import httpx
import uvicorn
from sqlalchemy import func, select

from connectors.kubernetes.fake import InMemoryCluster
from entrypoints.web.app import create_app
from entrypoints.web.auth import hash_password
from gpuops.config import Settings
from gpuops.pipeline import Pipeline, Step
from gpuops.store import migrate
from gpuops.store.models import Action, Approval, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from tests.conftest import free_port
from tests.waiting import wait_for

PASSWORDS = {"vera": "viewer-password", "april": "approver-password", "adam": "admin-password"}
ROLES = {"vera": "viewer", "april": "approver", "adam": "admin"}
SESSION_SECRET = "s" * 48


@cache
def users_setting() -> str:
    return ";".join(f"{name}:{ROLES[name]}:{hash_password(pw)}" for name, pw in PASSWORDS.items())


def web_container(database_url: str, **settings: Any) -> Container:
    migrate.upgrade(database_url)
    return bootstrap(Settings(database_url=database_url, users=users_setting(), session_secret=SESSION_SECRET,
                              **settings), cluster=InMemoryCluster())


@dataclass
class ResumeRecorder:
    """A dispatcher that records the agent steps a decision hands on, instead of running them."""

    resumed: list[tuple[int, dict[str, Any]]]

    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        if step == Step.AGENT_STEP:
            self.resumed.append((int(payload["incident_id"]), dict(payload.get("decision") or {})))


@dataclass
class WebServer:
    url: str
    container: Container
    resumed: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@contextmanager
def serve(container: Container, pipeline: Pipeline | None = None) -> Iterator[WebServer]:
    """The app on a free port; decisions go to `pipeline` (default: one recording the agent steps handed on)."""
    port = free_port()
    web = WebServer(f"http://127.0.0.1:{port}", container)
    app = create_app(container, pipeline=pipeline or Pipeline(container, ResumeRecorder(web.resumed)), sse_poll_s=0.2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="web-test-server", daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the test web server's thread died"
        return server.started

    wait_for(started, timeout=20, interval=0.02, message="the test web server did not start")
    try:
        yield web
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve_on(database_url: str, **settings: Any) -> Iterator[WebServer]:
    """A fresh container on `database_url` (see `web_container`), its app served for the block, then closed."""
    container = web_container(database_url, **settings)
    try:
        with serve(container) as server:
            yield server
    finally:
        container.close()


@contextmanager
def sign_in(base_url: str, name: str, password: str | None = None) -> Iterator[httpx.Client]:
    """A client holding a signed-in session (through the real sign-in form and its CSRF token)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"csrf_token": token, "username": name,
                                               "password": password or PASSWORDS[name], "next": "/"})
        assert response.status_code == 303, response.text
        yield client


def basic(name: str) -> dict[str, str]:
    """HTTP Basic credentials of one of the test users (PASSWORDS)."""
    token = base64.b64encode(f"{name}:{PASSWORDS[name]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


# A verdict's budget as policy stores it: the counts, then how the limits were derived.
BUDGET = {"nodes_out": 0, "nodes_out_after": 1, "nodes_out_limit": 2, "healthy_gpus_after": 56, "min_healthy_gpus": 52,
          "actions_last_hour": 3, "rate_limit": 20, "fleet_nodes": 8, "max_nodes_out": 2,
          "max_nodes_out_fraction": 0.25, "fleet_gpus": 64, "min_healthy_gpu_fraction": 0.8}


def seed_awaiting(container: Container, *, host: str = "gpu-node-003", required: int = 1,
                  plan_hash: str = "c" * 64, title: str = "ECC double-bit errors") -> tuple[int, int, str]:
    """An incident awaiting approval of a drain, as the agent leaves it. Returns (incident, action, plan hash)."""
    now = datetime.now(tz=UTC)
    with container.uow() as uow:
        incident = Incident(dedup_key=f"{host}/2/ecc/{now.timestamp()}", scope="gpu", family="ecc", hostname=host,
                            gpu=2, severity="critical", title=title, status="awaiting_approval", opened_at=now,
                            updated_at=now, summary="Volatile DBE count rose from 0 to 3 in 5 minutes.")
        uow.session.add(incident)
        uow.flush()
        action = Action(incident_id=incident.id, runbook="drain_node", targets=[f"node/{host}"],
                        parameters={"grace_period_s": 120}, plan_hash=plan_hash,
                        idempotency_key=f"incident-{incident.id}:r0:{plan_hash}", status="awaiting_approval",
                        approvals_required=required, risk="medium", created_at=now,
                        rationale="DBEs on GPU 2 mean the memory is failing; drain before the job crashes.",
                        diff={"changes": [f"cordon {host}", "evict 2 pods"], "pods_affected": ["ml/train-0"],
                              "gpus_affected": 8, "gpu_hours_at_risk": 4.5, "blockers": []},
                        verdict={"gate": "one_approver", "reasons": ["within budgets"], "budget": BUDGET})
        uow.session.add(action)
        uow.commit()
        return incident.id, action.id, plan_hash


def action_state(container: Container, action_id: int) -> tuple[str, list[tuple[str, str, str]], int]:
    """(status, [(approver, channel, decision)], audit events) of an action, straight from the store."""
    with container.session_factory() as session:
        action = session.get(Action, action_id)
        assert action is not None
        approvals = [(a.approver, a.channel, a.decision) for a in
                     session.scalars(select(Approval).where(Approval.action_id == action_id))]
        audited = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
        return action.status, approvals, int(audited)
