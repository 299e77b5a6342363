"""`gpuops policy reset-breaker`: an authenticated approver closes the circuit breaker that failed verifications
opened, and automation resumes; anyone else is refused, and so is anyone who only names someone. Both are in the
audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from entrypoints.cli import cli
from gpuops.config import Settings
from gpuops.policy import Gate, PolicyConfig, evaluate, record_verification
from gpuops.store import migrate
from gpuops.store.audit import verify_chain
from gpuops.store.models import AuditEvent, PolicyState
from gpuops.wiring import Container, bootstrap
from tests.integration.test_policy import FACTS, NOW, drain, make_action, make_incident
from tests.people import PASSWORD, users_setting

APPROVER, STRANGER = "alice", "mallory"
CONFIG = PolicyConfig(breaker_failures=2, max_nodes_out=20, max_nodes_out_fraction=1.0)


@pytest.fixture
def settings(db_url: str) -> Settings:
    migrate.upgrade(db_url)
    return Settings(database_url=db_url, users=users_setting(alice="approver", bob="admin", mallory="viewer"))


@pytest.fixture
def store(settings: Settings) -> Iterator[Container]:
    """The store with its breaker opened as production opens it: two failed verifications."""
    container = bootstrap(settings)
    with container.uow() as uow:
        incident = make_incident(uow.session, "gpu-node-001")
        for i in range(2):
            action = make_action(uow.session, incident, "reset_gpu", "gpu/gpu-node-001/0", f"failed-{i}")
            action.status, action.verified_at = "failed", NOW
            uow.flush()
            record_verification(uow.session, action=action, ok=False, config=CONFIG, now=NOW)
        uow.commit()
    assert breaker(container) == (True, "2 failed verifications within 3600s")
    try:
        yield container
    finally:
        container.close()


def reset(settings: Settings, *args: str, password: str | None = PASSWORD) -> Result:
    """The command as `gpuops` runs it, on the test's own settings, with GPUOPS_PASSWORD set (unless None)."""
    env = {"GPUOPS_PASSWORD": password, "GPUOPS_API_TOKEN": None}
    return CliRunner().invoke(cli, ["policy", "reset-breaker", *args], obj={"settings": settings}, env=env)


def breaker(container: Container) -> tuple[bool, str]:
    with container.uow() as uow:
        state = uow.session.get(PolicyState, 1)
        assert state is not None
        return state.breaker_open, state.breaker_reason


def resets(container: Container) -> list[tuple[str, str, dict[str, object]]]:
    with container.uow() as uow:
        events = uow.session.scalars(select(AuditEvent).where(AuditEvent.kind.like("policy.breaker_reset%"))
                                     .order_by(AuditEvent.seq))
        return [(e.kind, e.actor, dict(e.data)) for e in events]


def gate_for_a_new_drain(container: Container, node: str) -> Gate:
    with container.uow() as uow:
        incident = make_incident(uow.session, node)
        action = make_action(uow.session, incident, "drain_node", f"node/{node}", f"drain-{node}")
        return evaluate(uow.session, incident=incident, action=action, spec=drain(node), facts=FACTS,
                        config=CONFIG, now=NOW).gate


def test_an_approver_closes_the_breaker_and_automation_resumes(settings: Settings, store: Container) -> None:
    assert gate_for_a_new_drain(store, "gpu-node-002") == Gate.ESCALATE
    result = reset(settings, "--user", APPROVER, "--reason", "bad driver rollout rolled back", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown | {"opened_at": None} == {
        "actor": APPROVER, "reason": "bad driver rollout rolled back", "was_open": True, "opened_at": None,
        "opened_because": "2 failed verifications within 3600s", "closed": True, "refusal": None}
    assert shown["opened_at"].startswith(NOW.date().isoformat())
    assert breaker(store) == (False, "")
    assert resets(store) == [("policy.breaker_reset", APPROVER, shown)]
    assert gate_for_a_new_drain(store, "gpu-node-003") == Gate.TWO_APPROVERS
    with store.uow() as uow:
        assert verify_chain(uow.session).ok


def test_the_plain_output_says_what_it_did(settings: Settings, store: Container) -> None:
    closed = reset(settings, "--user", APPROVER, "--reason", "looked into it")
    assert closed.exit_code == 0, closed.output
    assert closed.output.startswith(f"circuit breaker closed by {APPROVER}: it had been open since ")
    assert "(2 failed verifications within 3600s); automation resumes" in closed.output
    again = reset(settings, "--user", "bob", "--reason", "checking")
    assert again.exit_code == 0 and "was not open; nothing changed" in again.output
    assert [(kind, actor, data["closed"]) for kind, actor, data in resets(store)] == [
        ("policy.breaker_reset", APPROVER, True), ("policy.breaker_reset", "bob", False)]


def test_a_user_whose_role_may_not_decide_is_refused_and_the_refusal_audited(
        settings: Settings, store: Container) -> None:
    result = reset(settings, "--user", STRANGER, "--reason", "let me through")
    assert result.exit_code == 1
    assert f"{STRANGER} is not allowed to reset the circuit breaker" in result.output
    assert "GPUOPS_USERS" in result.output and "nothing was changed" in result.output
    assert breaker(store) == (True, "2 failed verifications within 3600s")
    ((kind, actor, data),) = resets(store)
    assert (kind, actor, data["reason"], data["closed"]) == ("policy.breaker_reset_refused", STRANGER,
                                                              "let me through", False)
    assert str(data["refusal"]).startswith(f"{STRANGER} is not allowed")


def test_without_credentials_nothing_is_done_and_the_refusal_names_the_settings(
        settings: Settings, store: Container) -> None:
    result = reset(settings, "--reason", "who am I", password=None)
    assert result.exit_code == 1
    assert "GPUOPS_API_TOKEN" in result.output and "--user NAME" in result.output
    assert breaker(store)[0] and resets(store) == []


def test_naming_an_approver_is_not_being_one(settings: Settings, store: Container) -> None:
    named = reset(settings, "--user", STRANGER, "--as", APPROVER, "--reason", "it's me, alice")
    assert named.exit_code == 1 and f"--as {APPROVER} does not match the authenticated user {STRANGER}" in named.output
    assert "--as" not in reset(settings, "--user", APPROVER, "--as", APPROVER, "--reason", "same").output
    assert [(kind, actor) for kind, actor, _ in resets(store)] == [("policy.breaker_reset", APPROVER)]


def test_a_wrong_password_is_refused_and_audited(settings: Settings, store: Container) -> None:
    result = reset(settings, "--user", APPROVER, "--reason", "guess", password="not-the-password")
    assert result.exit_code == 1 and f"wrong password for {APPROVER}" in result.output
    assert breaker(store)[0] and resets(store) == []
    with store.uow() as uow:
        failed = [(e.kind, dict(e.data)) for e in uow.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "auth.failed"))]
    assert [(kind, data["user"], data["via"]) for kind, data in failed] == [("auth.failed", APPROVER, "cli")]


def test_a_reason_is_required(settings: Settings, store: Container) -> None:
    missing = reset(settings, "--user", APPROVER)
    blank = reset(settings, "--user", APPROVER, "--reason", "  ")
    assert missing.exit_code == 2 and "--reason" in missing.output
    assert blank.exit_code == 2 and "say why automation may resume" in blank.output
    assert breaker(store)[0] and resets(store) == []
