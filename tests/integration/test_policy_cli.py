"""`gpuops policy reset-breaker`: an approver closes the circuit breaker that failed verifications opened, and
automation resumes; anyone else is refused. Both are in the audit trail."""

from __future__ import annotations

import getpass
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

APPROVER, STRANGER = "alice", "mallory"
CONFIG = PolicyConfig(breaker_failures=2, max_nodes_out=20, max_nodes_out_fraction=1.0)


@pytest.fixture
def settings(db_url: str) -> Settings:
    migrate.upgrade(db_url)
    return Settings(database_url=db_url, approvers=(APPROVER, "bob"))


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


def reset(settings: Settings, *args: str) -> Result:
    """The command as `gpuops` runs it, on the test's own settings."""
    return CliRunner().invoke(cli, ["policy", "reset-breaker", *args], obj={"settings": settings})


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
    result = reset(settings, "--as", APPROVER, "--reason", "bad driver rollout rolled back", "--json")
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
    closed = reset(settings, "--as", APPROVER, "--reason", "looked into it")
    assert closed.exit_code == 0, closed.output
    assert closed.output.startswith(f"circuit breaker closed by {APPROVER}: it had been open since ")
    assert "(2 failed verifications within 3600s); automation resumes" in closed.output
    again = reset(settings, "--as", "bob", "--reason", "checking")
    assert again.exit_code == 0 and "was not open; nothing changed" in again.output
    assert [(kind, actor, data["closed"]) for kind, actor, data in resets(store)] == [
        ("policy.breaker_reset", APPROVER, True), ("policy.breaker_reset", "bob", False)]


def test_an_identity_not_in_the_approvers_is_refused_and_the_refusal_audited(
        settings: Settings, store: Container) -> None:
    result = reset(settings, "--as", STRANGER, "--reason", "let me through")
    assert result.exit_code == 1
    assert f"{STRANGER} is not allowed to reset the circuit breaker" in result.output
    assert "GPUOPS_APPROVERS" in result.output and "nothing was changed" in result.output
    assert breaker(store) == (True, "2 failed verifications within 3600s")
    ((kind, actor, data),) = resets(store)
    assert (kind, actor, data["reason"], data["closed"]) == ("policy.breaker_reset_refused", STRANGER,
                                                              "let me through", False)
    assert str(data["refusal"]).startswith(f"{STRANGER} is not allowed")


def test_the_identity_defaults_to_the_login_name(settings: Settings, store: Container) -> None:
    login = getpass.getuser()
    assert login not in settings.approvers
    result = reset(settings, "--reason", "who am I")
    assert result.exit_code == 1 and f"{login} is not allowed" in result.output
    assert [(kind, actor) for kind, actor, _ in resets(store)] == [("policy.breaker_reset_refused", login)]


def test_a_reason_is_required(settings: Settings, store: Container) -> None:
    missing = reset(settings, "--as", APPROVER)
    blank = reset(settings, "--as", APPROVER, "--reason", "  ")
    assert missing.exit_code == 2 and "--reason" in missing.output
    assert blank.exit_code == 2 and "say why automation may resume" in blank.output
    assert breaker(store)[0] and resets(store) == []
