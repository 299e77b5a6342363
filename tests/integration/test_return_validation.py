"""Return to service through the node agent's validation (GPUOPS_NODE_VALIDATION): once a probation's other
checks pass, gpuops asks for a NodeValidation and waits for it without blocking (each sweep reads it again); a
pass lifts gpuops' cordon, a failure keeps the node out with a hardware ticket that names the failed tests, and
no answer at all keeps it out too. Without the setting nothing is asked."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuops.config import Settings
from gpuops.pipeline import OrderedDispatcher, Pipeline
from gpuops.store import migrate
from gpuops.store.models import HardwareTicket, NodeProbation
from gpuops.wiring import bootstrap
from tests.agent.world import RUNBOOK_SETTINGS, default_cluster
from tests.integration.test_return_to_service import (
    NODE,
    POLICY,
    PROBATION_S,
    World,
    _incident,
    _read,
    _remediated,
)

TIMEOUT_S = 900.0


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    migrate.upgrade(db_url)
    cluster = default_cluster(tmp_path / "journal")
    settings = Settings(database_url=db_url, dry_run=False, node_validation=True, node_validation_level=3,
                        node_validation_timeout_seconds=TIMEOUT_S)
    container = bootstrap(settings, cluster=cluster, policy=POLICY, runbook_settings=RUNBOOK_SETTINGS)
    dispatcher = OrderedDispatcher(cluster.clock)
    pipeline = Pipeline(container, dispatcher, clock=cluster.clock, sleep=cluster.advance, worker="test")
    dispatcher.bind(pipeline.run)
    try:
        yield World(pipeline, dispatcher, cluster)
    finally:
        container.close()


def _asked(world: World) -> str:
    """The probation is over in data time; the first sweep asks for the validation and leaves the node out."""
    world.cluster.now += PROBATION_S + 60
    world.examined(120.0)
    world.sweep()
    (name,) = world.cluster.validations
    assert world.cluster.validations[name].node == NODE and name.startswith(f"gpuops-validate-{NODE}-p")
    assert world.cluster.nodes[NODE].unschedulable
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    assert probation.status == "probation" and probation.checks == []
    world.sweep()  # still running: asked again, the same request is read
    assert list(world.cluster.validations) == [name]
    return name


def test_a_passed_validation_returns_the_node(world: World) -> None:
    incident_id, probation = _remediated(world)
    name = _asked(world)
    world.cluster.finish_validation(name, passed=True, message="dcgmi diag -r 3: passed (40 pass)")
    assert world.sweep() == [probation.id]
    assert not world.cluster.nodes[NODE].unschedulable
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned"
    check = next(c for c in returned.checks if c["name"] == "node_validation")
    assert check["ok"] and "dcgmi diag -r 3: passed" in check["detail"]
    assert _incident(world, incident_id).status == "resolved"


def test_a_failed_validation_keeps_the_node_out_with_the_failed_tests_on_a_ticket(world: World) -> None:
    incident_id, probation = _remediated(world)
    name = _asked(world)
    world.cluster.finish_validation(name, passed=False, failed_tests=["GPU Memory (GPU 2)", "PCIe (GPU 2)"])
    world.sweep()
    assert world.cluster.nodes[NODE].unschedulable
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and [c["name"] for c in kept.checks if not c["ok"]] == ["node_validation"]
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert "GPU Memory (GPU 2), PCIe (GPU 2)" in ticket.evidence["evidence"]["node_validation"]
    assert _incident(world, incident_id).status == "escalated"


def test_no_node_agent_answering_keeps_the_node_out(world: World) -> None:
    _, probation = _remediated(world)
    _asked(world)
    world.examined(TIMEOUT_S + 60)
    world.sweep()
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "no node agent answered" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable


def test_without_the_setting_nothing_is_asked(db_url: str, tmp_path: Path) -> None:
    cluster = default_cluster(tmp_path / "journal")
    container = bootstrap(Settings(database_url=db_url), cluster=cluster)
    try:
        assert container.node_diagnostics(cluster.clock) is None
    finally:
        container.close()


def test_a_withheld_gpu_leaves_the_other_gpus_to_the_diagnostic(world: World) -> None:
    _, probation = _remediated(world)
    info = world.cluster.nodes[NODE]
    world.cluster.nodes[NODE] = dataclasses.replace(info, gpu_allocatable=info.gpu_capacity - 1)
    world.cluster.now += PROBATION_S + 60
    world.examined(120.0)
    world.sweep()
    (name,) = world.cluster.validations
    assert ("NodeValidation", NODE, "0,1,3,4,5,6,7") in world.cluster.actions  # all but the withheld GPU 2
    world.cluster.finish_validation(name, passed=False, failed_tests=["GPU Memory (GPU 5)"])
    world.sweep()
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "GPU Memory (GPU 5)" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable
