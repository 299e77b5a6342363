"""API tokens for scripts and a CLI that decides only as an authenticated user (issue 16), on the real
PostgreSQL and a real HTTP server: `gpuops users token create|list|revoke`, the API accepting
`Authorization: Bearer` as the token's user with that user's role until the token is revoked or expires, bad
tokens throttled like failed sign-ins, and `gpuops approve` refusing anyone it did not authenticate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from entrypoints.cli import cli
from gpuops.store.models import ApiToken, AuditEvent
from gpuops.wiring import Container
from tests.web_server import PASSWORDS, WebServer, action_state, seed_awaiting, serve_on

pytestmark = pytest.mark.postgres
LIMITS: dict[str, Any] = {"sign_in_max_failures": 3, "sign_in_max_failures_per_client": 10,
                          "sign_in_window_seconds": 600}


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url, **LIMITS) as server:
        yield server


def gpuops(container: Container, *args: str, password: str | None = None, token: str | None = None) -> Result:
    """A `gpuops` command on the test's settings, with GPUOPS_PASSWORD / GPUOPS_API_TOKEN as given (else unset)."""
    env = {"GPUOPS_PASSWORD": password, "GPUOPS_API_TOKEN": token}
    return CliRunner().invoke(cli, list(args), obj={"settings": container.settings}, env=env)


def create_token(container: Container, user: str, *extra: str) -> dict[str, Any]:
    result = gpuops(container, "users", "token", "create", user, "--json", *extra, password=PASSWORDS[user])
    assert result.exit_code == 0, result.output
    created: dict[str, Any] = json.loads(result.output)
    return created


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audited(container: Container, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    with container.session_factory() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.kind.startswith(prefix)).order_by(AuditEvent.seq))
        return [(e.kind, e.actor, dict(e.data)) for e in rows]


def test_a_token_acts_as_its_user_until_it_is_revoked(web: WebServer) -> None:
    created = create_token(web.container, "april", "--label", "nightly script")
    token = created["token"]
    assert token.startswith(f"gpo_{created['id']}_") and created["status"] == "active"
    with web.container.session_factory() as session:  # only a digest is stored
        row = session.get(ApiToken, created["id"])
        assert row is not None and token.split("_", 2)[2] not in row.secret_sha256
    me = httpx.get(f"{web.url}/api/me", headers=bearer(token))
    assert me.status_code == 200 and me.json() == {"name": "april", "role": "approver", "via": "token"}
    _incident_id, action_id, plan_hash = seed_awaiting(web.container)
    approved = httpx.post(f"{web.url}/api/actions/{action_id}/approve", headers=bearer(token),
                          json={"plan_hash": plan_hash, "reason": "from a script"})  # no CSRF token needed
    assert approved.status_code == 200, approved.text
    assert action_state(web.container, action_id)[:2] == ("approved", [("april", "dashboard", "approve")])

    listed = gpuops(web.container, "users", "token", "list", "--json")
    assert listed.exit_code == 0 and token not in listed.output
    assert [(t["id"], t["user"], t["status"], t["label"]) for t in json.loads(listed.output)] == [
        (created["id"], "april", "active", "nightly script")]
    revoked = gpuops(web.container, "users", "token", "revoke", created["id"], token=token)
    assert revoked.exit_code == 0 and f"API token {created['id']} of april is revoked" in revoked.output
    assert httpx.get(f"{web.url}/api/me", headers=bearer(token)).status_code == 401
    assert [(kind, actor, data["token_id"]) for kind, actor, data in audited(web.container, "auth.token")] == [
        ("auth.token_created", "april", created["id"]), ("auth.token_revoked", "april", created["id"])]
    ((_kind, _actor, failed),) = audited(web.container, "auth.failed")
    assert failed["user"] == f"token:{created['id']}" and failed["via"] == "token"


def test_a_token_carries_its_users_role_and_no_more(web: WebServer) -> None:
    token = create_token(web.container, "vera")["token"]
    _incident_id, action_id, plan_hash = seed_awaiting(web.container)
    refused = httpx.post(f"{web.url}/api/actions/{action_id}/approve", headers=bearer(token),
                         json={"plan_hash": plan_hash, "reason": "ok"})
    assert refused.status_code == 403 and "vera is not allowed" in refused.text
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_expired_unknown_and_forged_tokens_get_401_and_guessing_is_throttled(web: WebServer) -> None:
    expired = create_token(web.container, "adam", "--expires", "1h")
    with web.container.uow() as uow:  # an hour later
        row = uow.session.get(ApiToken, expired["id"])
        assert row is not None
        row.expires_at = datetime.now(tz=UTC) - timedelta(seconds=1)
        uow.commit()
    good = create_token(web.container, "adam")["token"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (expired["token"], "gpo_0123456789ab_" + "x" * 43, "not-a-token"):
        assert httpx.get(f"{web.url}/api/me", headers=bearer(token)).status_code == 401
    for _ in range(3):  # the third failure on one token id locks that id out
        assert httpx.get(f"{web.url}/api/me", headers=bearer(forged)).status_code == 401
    locked = httpx.get(f"{web.url}/api/me", headers=bearer(good))
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0  # the right secret too, for now
    other = create_token(web.container, "april")["token"]  # other tokens from this client still work
    assert httpx.get(f"{web.url}/api/me", headers=bearer(other)).status_code == 200
    assert len(audited(web.container, "auth.failed")) == 6
    ((_kind, _actor, lockout),) = audited(web.container, "auth.locked_out")
    assert lockout["scope"] == "user" and lockout["user"] == f"token:{good.split('_')[1]}"


def test_tokens_are_created_only_by_their_user_or_an_admin(web: WebServer) -> None:
    wrong = gpuops(web.container, "users", "token", "create", "april", password="not-april's")
    assert wrong.exit_code == 1 and "wrong password for april" in wrong.output
    other = gpuops(web.container, "users", "token", "create", "adam", "--user", "april", password=PASSWORDS["april"])
    assert other.exit_code == 1 and "april may manage only their own API tokens" in other.output
    by_admin = gpuops(web.container, "users", "token", "create", "april", "--user", "adam", "--expires", "never",
                      "--json", password=PASSWORDS["adam"])
    assert by_admin.exit_code == 0, by_admin.output
    assert json.loads(by_admin.output)["expires_at"] is None
    unknown = gpuops(web.container, "users", "token", "create", "nobody", "--user", "adam", password=PASSWORDS["adam"])
    assert unknown.exit_code == 1 and "'nobody' is not a dashboard user" in unknown.output
    assert [(actor, data["user"]) for _, actor, data in audited(web.container, "auth.token_created")] == [
        ("adam", "april")]


def test_the_cli_refuses_to_decide_without_credentials_and_names_what_to_set(web: WebServer) -> None:
    _incident_id, action_id, _hash = seed_awaiting(web.container)
    result = gpuops(web.container, "approve", str(action_id))
    assert result.exit_code == 1
    assert "GPUOPS_API_TOKEN" in result.output and "--user NAME" in result.output and "GPUOPS_PASSWORD" in result.output
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])
    revoked = create_token(web.container, "april")
    gpuops(web.container, "users", "token", "revoke", revoked["id"], "--user", "april", password=PASSWORDS["april"])
    stale = gpuops(web.container, "approve", str(action_id), token=revoked["token"])
    assert stale.exit_code == 1 and "revoked or expired" in stale.output
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_the_cli_refuses_as_someone_else(web: WebServer) -> None:
    _incident_id, action_id, _hash = seed_awaiting(web.container)
    token = create_token(web.container, "vera")["token"]
    result = gpuops(web.container, "approve", str(action_id), "--as", "april", token=token)
    assert result.exit_code == 1 and "--as april does not match the authenticated user vera" in result.output
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_the_same_person_from_the_cli_and_the_dashboard_is_one_approval_of_two(web: WebServer) -> None:
    _incident_id, action_id, plan_hash = seed_awaiting(web.container, required=2)
    token = create_token(web.container, "april")["token"]
    by_cli = gpuops(web.container, "approve", str(action_id), "--json", token=token)
    assert by_cli.exit_code == 0, by_cli.output
    assert json.loads(by_cli.output)["approvals"] == 1
    again = httpx.post(f"{web.url}/api/actions/{action_id}/approve", auth=("april", PASSWORDS["april"]),
                       json={"plan_hash": plan_hash, "reason": "me again"})
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["approvals"] == 1
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [("april", "cli", "approve")])
    second = httpx.post(f"{web.url}/api/actions/{action_id}/approve", auth=("adam", PASSWORDS["adam"]),
                        json={"plan_hash": plan_hash, "reason": "second pair of eyes"})
    assert second.json()["status"] == "approved"
    ((_kind, actor, data), _second) = audited(web.container, "approval.approve")
    assert (actor, data["channel"], data["channel_identity"]) == ("april", "cli", f"token:{token.split('_')[1]}")
