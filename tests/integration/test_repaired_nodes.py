"""After repair: a node gpuops kept out with a hardware ticket comes back only when the technicians say it was
repaired, and then only through a fresh probation's checks; the budget it held is freed when it returns. The
`gpuops tickets` commands list the tickets and record the repair, for an authenticated approver only."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from entrypoints.cli import cli
from gpuops.config import Settings
from gpuops.execution.probation import NotKeptOut, mark_repaired
from gpuops.store.models import Action, AuditEvent, HardwareTicket, Incident, NodeProbation
from tests.agent.helpers import open_incident
from tests.integration.test_return_to_service import (
    NODE,
    OTHER,
    POLICY,
    PORT_TAINT,
    PROBATION_S,
    World,
    _incident,
    _leases,
    _port_finding,
    _read,
    _world,
)
from tests.people import PASSWORD, users_setting


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(db_url, tmp_path, POLICY)


def _kept_out_for_a_row_remap_failure(world: World) -> tuple[int, HardwareTicket]:
    incident_id = open_incident(world.pipeline.container, "row_remap", node=NODE,
                                evidence={"metric": "DCGM_FI_DEV_ROW_REMAP_FAILURE", "value": 1.0})
    world.settle(incident_id)  # cordon, drain, open_hardware_ticket
    world.examined(PROBATION_S + 60)
    world.sweep()
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    (kept,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    assert kept.status == "kept_out" and ticket.status == "open"
    return incident_id, ticket


def _repair(world: World, note: str = "swapped GPU 2") -> NodeProbation:
    with world.pipeline.container.uow() as uow:
        probation = mark_repaired(uow.session, node=NODE, by="tech", note=note, config=POLICY,
                                  now=datetime.fromtimestamp(world.cluster.now, tz=UTC))
        uow.commit()
        uow.session.expunge(probation)
    return probation


def test_a_repaired_node_returns_through_a_fresh_probation(world: World) -> None:
    incident_id, ticket = _kept_out_for_a_row_remap_failure(world)
    world.examined(3600)
    assert world.sweep() == [] and world.cluster.nodes[NODE].unschedulable  # nobody repaired it yet

    probation = _repair(world)
    (closed,) = _read(world, HardwareTicket, HardwareTicket.id == ticket.id)
    assert closed.status == "repaired" and closed.evidence["repaired_by"] == "tech"
    statuses = {p.id: p.status for p in _read(world, NodeProbation, NodeProbation.hostname == NODE)}
    assert sorted(statuses.values()) == ["probation", "repaired"] and statuses[probation.id] == "probation"

    world.examined(PROBATION_S / 2)
    assert world.sweep() == [] and world.cluster.nodes[NODE].unschedulable  # the fresh probation runs its course
    world.examined(PROBATION_S / 2 + 60)
    assert world.sweep() == [probation.id]
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned"
    assert next(c for c in returned.checks if c["name"] == "fault_fixed")["detail"].endswith(
        "hardware repaired by tech: swapped GPU 2")
    assert not world.cluster.nodes[NODE].unschedulable and _leases(world, NODE) == []
    assert _incident(world, incident_id).status == "resolved"


def test_a_repaired_node_that_still_fails_stays_out(world: World) -> None:
    _kept_out_for_a_row_remap_failure(world)
    # the swap did not take: the device plugin sees 7 of 8
    world.cluster.nodes[NODE] = dataclasses.replace(world.cluster.nodes[NODE], gpu_allocatable=7)
    probation = _repair(world)
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and [c["name"] for c in kept.checks if not c["ok"]] == ["gpus_present"]
    assert world.cluster.nodes[NODE].unschedulable and len(_leases(world, NODE)) == 1


def test_only_a_node_kept_out_can_be_marked_repaired(world: World) -> None:
    with world.pipeline.container.uow() as uow, pytest.raises(NotKeptOut, match="not kept out for repair"):
        mark_repaired(uow.session, node=NODE, by="tech", note="", config=POLICY,
                      now=datetime.fromtimestamp(world.cluster.now, tz=UTC))


def test_the_tickets_commands_list_and_mark_repaired_for_an_approver_only(world: World, db_url: str) -> None:
    _kept_out_for_a_row_remap_failure(world)
    settings = Settings(database_url=db_url, users=users_setting(alice="approver", mallory="viewer"))

    def gpuops(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), obj={"settings": settings},
                                  env={"GPUOPS_PASSWORD": PASSWORD, "GPUOPS_API_TOKEN": None})

    listed = gpuops("tickets", "list")
    assert listed.exit_code == 0 and NODE in listed.output and "open" in listed.output
    refused = gpuops("tickets", "repaired", NODE, "--user", "mallory")
    assert refused.exit_code != 0 and "may not return nodes to service" in refused.output
    done = gpuops("tickets", "repaired", NODE, "--user", "alice", "--note", "new board")
    assert done.exit_code == 0, done.output
    assert f"{NODE} marked repaired by alice" in done.output
    again = gpuops("tickets", "repaired", NODE, "--user", "alice")
    assert again.exit_code != 0 and "not kept out for repair" in again.output
    assert gpuops("tickets", "list").output.strip() == "no open hardware tickets"
    assert "repaired" in gpuops("tickets", "list", "--all").output
    with world.pipeline.container.uow() as uow:
        kinds = [e.kind for e in uow.session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    assert "tickets.repaired_refused" in kinds and "probation.repaired" in kinds


def test_a_port_ticketed_while_its_node_served_on_is_repaired_and_its_taint_lifted(world: World) -> None:
    """Symbol errors on a port no job crosses: the plan opens the port's ticket and puts the port's taint on the
    node, which serves on (no cordon, no drain: it takes work that stays inside it, so the taint needs no room in
    the nodes-out budget, spent here on a human's maintenance). When the humans replace the
    cable they close that ticket the same way as any other, a fresh probation watches the node, and once its
    checks pass the taint is lifted. (A node with no ticket at all still has nothing to repair.)"""
    del world.cluster.pods[("train", "llm-3-6")]  # GPUs 6 and 7 of the node hold nothing: no traffic on mlx5_7
    world.cluster.cordon(OTHER, reason="a human's maintenance")  # the one node the budget lets out is out
    incident_id = open_incident(world.pipeline.container, "fabric", node=NODE, gpu=None,
                                evidence={"condition": "symbol_errors", "device": "mlx5_7", "port": 1, "hca": 7})
    world.settle(incident_id)

    def runs() -> list[tuple[str, str]]:
        with world.pipeline.container.uow() as uow:
            return [(a.runbook, a.status) for a in uow.session.scalars(
                select(Action).where(Action.incident_id == incident_id).order_by(Action.id))]

    assert runs() == [("open_hardware_ticket", "succeeded"), ("taint_port", "succeeded")]
    node = world.cluster.nodes[NODE]
    assert [(t.key, t.value, t.effect) for t in node.taints] == [(PORT_TAINT, "mlx5_7", "NoSchedule")]
    assert not node.unschedulable and _leases(world, NODE) == []  # nothing out: no budget held
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert ticket.status == "open" and _read(world, NodeProbation, NodeProbation.hostname == NODE) == []
    assert _incident(world, incident_id).status == "resolved"

    probation = _repair(world, note="cable swapped")
    assert probation.incident_id == incident_id and probation.status == "probation"
    (closed,) = _read(world, HardwareTicket, HardwareTicket.id == ticket.id)
    assert closed.status == "repaired" and closed.evidence["note"] == "cable swapped"
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (done,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert done.status == "returned" and all(c["ok"] for c in done.checks), done.checks
    assert runs()[-1] == ("untaint_node", "succeeded")
    assert world.cluster.nodes[NODE].taints == () and not world.cluster.nodes[NODE].unschedulable
    assert _incident(world, incident_id).status == "resolved"
    with world.pipeline.container.uow() as uow, pytest.raises(NotKeptOut, match="no open hardware ticket"):
        mark_repaired(uow.session, node=NODE, by="tech", note="", config=POLICY,
                      now=datetime.fromtimestamp(world.cluster.now, tz=UTC))


def test_a_tainted_ports_later_reports_and_another_faults_return_leave_its_taint_alone(world: World) -> None:
    """While the port's ticket is open, what the port goes on reporting is filed with its incident (no new incident,
    no new plan), and another fault's remediation on the same node returns the node without lifting the port's
    taint: only the port's repair lifts it."""
    del world.cluster.pods[("train", "llm-3-6")]
    port = open_incident(world.pipeline.container, "fabric", node=NODE, gpu=None,
                         evidence={"condition": "symbol_errors", "device": "mlx5_7", "port": 1, "hca": 7})
    world.settle(port)
    world.cluster.now += 600
    _port_finding(world, "mlx5_7", world.cluster.now, "symbol_errors")
    assert [i.id for i in _read(world, Incident)] == [port] and _incident(world, port).status == "resolved"

    xid = open_incident(world.pipeline.container, "xid", node=NODE, gpu=2, evidence={"xid": 48})
    world.settle(xid)  # cordon, drain, reset: the node goes on probation
    (probation,) = _read(world, NodeProbation, NodeProbation.incident_id == xid)
    world.cluster.now += 60
    _port_finding(world, "mlx5_7", world.cluster.now, "symbol_errors")  # its own failing, not the node's
    world.examined(PROBATION_S + 120)
    assert world.sweep() == [probation.id]
    (back,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert back.status == "returned", back.checks
    node = world.cluster.nodes[NODE]
    assert not node.unschedulable
    assert [(t.key, t.value) for t in node.taints] == [(PORT_TAINT, "mlx5_7")]  # still waits for its cable
    assert [t.status for t in _read(world, HardwareTicket, HardwareTicket.incident_id == port)] == ["open"]
