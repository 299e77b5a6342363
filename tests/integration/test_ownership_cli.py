"""Incident ownership from the command line (SQLite and PostgreSQL): `gpuops incidents ack|assign|note|replan|resolve`,
`gpuops approve|reject --incident N`, `gpuops silences …` and `gpuops maintenance …`, authenticated like `gpuops
approve`; refusals name the setting to change; the agent re-plans after a rejection through policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from domain import FindingKind
from entrypoints.cli import cli
from entrypoints.commands.ownership import FAMILIES
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from tests.agent.helpers import graph_on, open_incident
from tests.agent.world import JOURNAL_ENV, build_context, executed
from tests.people import PASSWORD, users_setting

FACTORY = "tests.agent.world:context_for"


@pytest.fixture
def settings(db_url: str) -> Settings:
    migrate.upgrade(db_url)
    return Settings(database_url=db_url, users=users_setting(alice="approver", bob="admin", vic="viewer"))


@pytest.fixture
def store(settings: Settings) -> Iterator[Container]:
    container = bootstrap(settings)
    try:
        yield container
    finally:
        container.close()


def gpuops(settings: Settings, *args: str, journal: Path | None = None) -> Result:
    """The command as `gpuops` runs it, on the test's settings, signing in with GPUOPS_PASSWORD."""
    env = {"GPUOPS_PASSWORD": PASSWORD, "GPUOPS_API_TOKEN": None, "KUBECONFIG": "/nonexistent",
           JOURNAL_ENV: str(journal) if journal else None}
    return CliRunner().invoke(cli, list(args), obj={"settings": settings}, env=env)


def test_the_family_choices_are_the_finding_kinds() -> None:
    assert set(FAMILIES) == {k.value for k in FindingKind}


def test_ack_assign_note_and_resolve_as_an_approver_and_a_viewer_is_refused(settings: Settings,
                                                                             store: Container) -> None:
    incident_id = open_incident(store, "xid", evidence={"xid": 79})
    n = str(incident_id)
    refused = gpuops(settings, "incidents", "ack", n, "--user", "vic")
    assert refused.exit_code == 1 and "GPUOPS_USERS" in refused.output and "nothing was changed" in refused.output
    nobody = CliRunner().invoke(cli, ["incidents", "ack", n], obj={"settings": settings},
                                env={"GPUOPS_API_TOKEN": None})
    assert nobody.exit_code == 1 and "GPUOPS_API_TOKEN" in nobody.output

    assert "acknowledged by alice" in gpuops(settings, "incidents", "ack", n, "--user", "alice").output
    assert "nothing changed" in gpuops(settings, "incidents", "ack", n, "--user", "bob").output
    assigned = gpuops(settings, "incidents", "assign", n, "bob", "--user", "alice", "--json")
    assert assigned.exit_code == 0 and json.loads(assigned.output)["assignee"] == "bob"
    stranger = gpuops(settings, "incidents", "assign", n, "zed", "--user", "alice")
    assert stranger.exit_code == 1 and "not a dashboard user" in stranger.output
    assert gpuops(settings, "incidents", "note", n, "reseated the GPU", "--user", "bob").exit_code == 0
    resolved = gpuops(settings, "incidents", "resolve", n, "--reason", "reseated, healthy since", "--user", "bob")
    assert resolved.exit_code == 0 and "resolved by bob" in resolved.output
    shown = json.loads(gpuops(settings, "incidents", "show", n, "--json").output)
    assert (shown["status"], shown["acknowledged_by"], shown["assignee"]) == ("resolved", "alice", "bob")
    assert [e["kind"] for e in shown["timeline"] if e["kind"] in ("note", "acknowledged", "assigned")] == \
        ["acknowledged", "assigned", "note"]
    with store.uow() as uow:
        kinds = [(e.kind, e.actor) for e in uow.session.scalars(select(AuditEvent).where(
            AuditEvent.kind.in_(["incident.acknowledged", "incident.assigned", "incident.note",
                                 "incident.resolved_by_hand", "ownership.refused"])).order_by(AuditEvent.seq))]
        assert verify_chain(uow.session).ok
    assert kinds == [("ownership.refused", "vic"), ("incident.acknowledged", "alice"), ("incident.assigned", "alice"),
                     ("incident.note", "bob"), ("incident.resolved_by_hand", "bob")]


def test_reject_by_incident_replan_and_approve_by_incident(settings: Settings, store: Container,
                                                           tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    incident_id = open_incident(store, "xid", evidence={"xid": 79})
    with graph_on(store) as graph:
        from agent.runner import start

        waiting = start(graph, build_context(store, journal), incident_id).waiting_for
    assert waiting is not None and waiting["runbook"] == "cordon_node"
    n = str(incident_id)
    rejected = gpuops(settings, "reject", "--incident", n, "--reason", "cordon later", "--user", "alice",
                      "--context-factory", FACTORY, journal=journal)
    assert rejected.exit_code == 0, rejected.output
    assert "escalated" in rejected.output
    replanned = gpuops(settings, "incidents", "replan", n, "--reason", "drain now, the job checkpointed",
                       "--user", "alice", "--context-factory", FACTORY, journal=journal)
    assert replanned.exit_code == 0, replanned.output
    assert "waiting for a decision on action" in replanned.output
    approved = gpuops(settings, "approve", "--incident", n, "--reason", "ok", "--user", "bob",
                      "--context-factory", FACTORY, journal=journal)
    assert approved.exit_code == 0, approved.output
    assert "kube-config" not in approved.output
    with store.uow() as uow:
        actions = [(a.runbook, a.status) for a in uow.session.scalars(
            select(Action).where(Action.incident_id == incident_id).order_by(Action.id))]
    assert actions[:2] == [("cordon_node", "rejected"), ("drain_node", "succeeded")]
    assert "cordon_node" not in [runbook for runbook, _ in actions[1:]]
    assert f"cordon {'gpu-node-003'}" in executed(journal)  # the drain cordons first, as its runbook does


def test_approve_by_incident_names_the_actions_when_it_cannot_choose(settings: Settings, store: Container) -> None:
    incident_id = open_incident(store, "xid", evidence={"xid": 79})
    with store.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        for key, runbook in (("a", "cordon_node"), ("b", "drain_node")):
            uow.session.add(Action(incident_id=incident_id, runbook=runbook, targets=["node/gpu-node-003"],
                                   plan_hash=key * 64, idempotency_key=key, status="awaiting_approval"))
        uow.commit()
    several = gpuops(settings, "approve", "--incident", str(incident_id), "--user", "alice")
    assert several.exit_code == 1 and "2 actions waiting" in several.output and "cordon_node" in several.output
    both = gpuops(settings, "approve", "1", "--incident", str(incident_id), "--user", "alice")
    assert both.exit_code == 2 and "either ACTION_ID or --incident" in both.output
    viewer = gpuops(settings, "reject", "--incident", "999", "--reason", "x", "--user", "vic")
    assert viewer.exit_code == 1 and "incident 999 does not exist" in viewer.output


def test_an_approval_without_a_cluster_here_prints_no_configuration_error(settings: Settings,
                                                                           store: Container) -> None:
    from tests.web_server import seed_awaiting

    incident_id, action_id, _ = seed_awaiting(store)
    refused = gpuops(settings, "approve", str(action_id), "--user", "vic")
    assert refused.exit_code == 1 and "GPUOPS_USERS" in refused.output and "GPUOPS_API_TOKEN" in refused.output
    done = gpuops(settings, "approve", "--incident", str(incident_id), "--user", "alice")
    assert done.exit_code == 0, done.output
    assert "approve recorded by alice" in done.output and "the running gpuops service" in done.output
    assert "kube-config" not in done.output and "not planned" not in done.output


def test_silences_and_maintenance_windows_from_the_cli(settings: Settings, store: Container) -> None:
    made = gpuops(settings, "silences", "create", "--family", "thermal", "--duration", "2h", "--reason",
                  "cooling work", "--user", "alice", "--json")
    assert made.exit_code == 0, made.output
    silence = json.loads(made.output)
    assert (silence["family"], silence["state"], silence["created_by"]) == ("thermal", "active", "alice")
    start = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(days=30)
    window = gpuops(settings, "maintenance", "create", "--node", "gpu-node-002", "--start", start.isoformat(),
                    "--end", (start + timedelta(hours=2)).isoformat(), "--reason", "PSU swap", "--user", "bob")
    assert window.exit_code == 0 and "pending" in window.output
    nameless = gpuops(settings, "maintenance", "create", "--duration", "1h", "--reason", "x", "--user", "bob")
    assert nameless.exit_code == 2 and "--node" in nameless.output
    bad = gpuops(settings, "silences", "create", "--node", "gpu-node-001", "--duration", "forever", "--reason", "x",
                 "--user", "bob")
    assert bad.exit_code == 1 and "like 90s, 15m, 2h" in bad.output
    viewer = gpuops(settings, "silences", "create", "--node", "gpu-node-001", "--duration", "1h", "--reason", "x",
                    "--user", "vic")
    assert viewer.exit_code == 1 and "GPUOPS_USERS" in viewer.output

    assert gpuops(settings, "silences", "expire", str(silence["id"]), "--user", "bob").exit_code == 0
    wrong_kind = gpuops(settings, "maintenance", "end", str(silence["id"]), "--user", "bob")
    assert wrong_kind.exit_code == 1 and "does not exist" in wrong_kind.output
    listed = json.loads(gpuops(settings, "silences", "list", "--json").output)
    assert [(s["id"], s["state"], s["expired_by"]) for s in listed] == [(silence["id"], "expired", "bob")]
    table = gpuops(settings, "maintenance", "list").output
    assert "gpu-node-002" in table and "pending" in table and "PSU swap" in table
    bogus = gpuops(settings, "silences", "list", "--state", "asleep")
    assert bogus.exit_code == 2 and "active" in bogus.output and "expired" in bogus.output
