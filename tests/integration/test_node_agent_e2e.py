"""End to end on the twin with real node agents (`gpuops sim --external-node-agent`): a GPU falls off the bus
(XID 79) → gpuops cordons, drains and asks for a reboot → the node's agent reboots the host and the next agent
after the boot sees the new boot id → after the probation gpuops asks for a NodeValidation → the agent's DCGM
diagnostic passes and gpuops uncordons; on a second node the diagnostic fails a memory test, so the node stays out
and a hardware ticket names the failed test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent.rules import RulesPlanner
from evaluation.loop import NodeAgents, run_loop
from gpuops.policy import PolicyConfig
from gpuops.store import make_engine, make_session_factory
from gpuops.store.models import HardwareTicket
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin
from tests.integration.node_world import AgentProcess, NodeWorld

PASSES, FAILS = "gpu-node-002", "gpu-node-007"
SCENARIO = {
    "name": "node-agent-e2e", "seed": 3, "fleet": {"nodes": 12, "gpus_per_node": 8}, "duration": "150m", "step": "15s",
    "faults": [
        {"kind": "xid79", "node": PASSES, "gpu": 3, "at": "10m", "transient": True},
        {"kind": "xid79", "node": FAILS, "gpu": 3, "at": "80m", "transient": True},
    ],
    "approval": "auto_approve",
}
"""The second node's hardware ticket is opened about 122 simulated minutes in (reboot, probation, validation);
the run ends near half an hour later, as each simulated minute costs wall time for the agents to act."""


class Agents:
    """One agent process per faulted node, restarted like a DaemonSet's pod once its node is back after a reboot
    (the reboot program takes the agent down with the host)."""

    def __init__(self, root: Path, diag_fail: dict[str, dict[str, str]],
                 apps: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.root, self.diag_fail, self.apps = root, diag_fail, apps or {}
        self.twin: Twin | None = None
        self.started: dict[str, list[AgentProcess]] = {}

    @contextmanager
    def run(self, twin: Twin, url: str) -> Iterator[None]:
        self.twin = twin
        worlds = {node: NodeWorld(self.root / node, node, twin=url, reboot_kills_agent=True,
                                  diag_fail=self.diag_fail.get(node, {}), apps=self.apps.get(node, []))
                  for node in (PASSES, FAILS)}
        self.started = {node: [AgentProcess(url, world).start()] for node, world in worlds.items()}
        stop = threading.Event()

        def supervise() -> None:
            while not stop.wait(0.1):
                for node, agents in self.started.items():
                    if not agents[-1].alive() and twin.kube.node_ready(node):
                        agents.append(AgentProcess(url, worlds[node]).start())

        thread = threading.Thread(target=supervise, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            for agents in self.started.values():
                for agent in agents:
                    agent.kill()


def _rules(_twin: Any) -> Any:
    return nullcontext(RulesPlanner())


def test_reboot_validation_and_return_to_service_with_real_node_agents(tmp_path: Path) -> None:
    agents = Agents(tmp_path / "nodes", {FAILS: {"3": "Memory"}})
    run = run_loop(scenario_from_dict(SCENARIO, source="test"), planner=_rules, policy=PolicyConfig(),
                   workdir=tmp_path, node_agents=NodeAgents(agents.run, pause_s=0.1, settings={
                       "node_validation": True, "node_validation_timeout_seconds": 7200.0}))
    twin = agents.twin
    assert twin is not None

    def runbooks(node: str) -> list[tuple[str, str]]:
        return [(a["runbook"], a["status"]) for a in run.actions if a["targets"] == [f"node/{node}"]]

    assert runbooks(PASSES) == [("cordon_node", "succeeded"), ("drain_node", "succeeded"),
                                ("reboot_node", "succeeded"), ("uncordon_node", "succeeded")]
    assert runbooks(FAILS) == [("cordon_node", "succeeded"), ("drain_node", "succeeded"),
                               ("reboot_node", "succeeded"), ("open_hardware_ticket", "succeeded")]
    assert run.cordoned_at_end == [FAILS]
    assert {i["hostname"]: i["status"] for i in run.incidents} == {PASSES: "resolved", FAILS: "escalated"}
    # one clock per record: the audit trail's times never go backwards, and no row ends before it began
    stamps = [e["ts"] for e in run.audit]
    assert stamps == sorted(stamps)
    assert all(i["opened_at"] <= i["updated_at"] <= (i["resolved_at"] or i["updated_at"]) for i in run.incidents)
    assert all(a["created_at"] <= a["executed_at"] for a in run.actions if a["executed_at"] is not None)

    reboots, _ = twin.kube.list_objects("nodereboots")
    assert {r["spec"]["nodeName"]: (r["status"]["phase"], r["status"]["message"]) for r in reboots} == {
        node: ("Succeeded", f"node {node} rebooted: boot id 0 -> 1") for node in (PASSES, FAILS)}
    validations, _ = twin.kube.list_objects("nodevalidations")
    verdicts = {v["spec"]["nodeName"]: (v["status"]["phase"], v["status"]["passed"], v["status"]["failedTests"])
                for v in validations}
    assert verdicts == {PASSES: ("Succeeded", True, []), FAILS: ("Succeeded", False, ["GPU Memory (GPU 3)"])}
    for node in (PASSES, FAILS):  # each agent went down with its host once and came back after the boot
        assert len(agents.started[node]) == 2

    engine = make_engine(f"sqlite:///{tmp_path / 'eval.db'}")
    try:
        with make_session_factory(engine)() as session:
            (ticket,) = session.scalars(select(HardwareTicket)).all()
            assert ticket.hostname == FAILS
            assert "GPU Memory (GPU 3)" in ticket.evidence["evidence"]["node_validation"]
    finally:
        engine.dispose()


def test_a_reset_the_agent_refuses_goes_to_a_human(tmp_path: Path) -> None:
    """A process outside Kubernetes still holds the GPU after the drain: the agent refuses the reset, naming it,
    the action fails and the incident is escalated; the node stays cordoned."""
    # escalated at about 14 minutes; the run goes on past the probation's verdict and ticket (about 43 minutes)
    scenario = {**SCENARIO, "duration": "50m",
                "faults": [{"kind": "gsp_timeout", "node": PASSES, "gpu": 0, "at": "10m"}]}
    agents = Agents(tmp_path / "nodes", {}, apps={PASSES: [{"gpu": 0, "pid": 777, "name": "stray-profiler"}]})
    run = run_loop(scenario_from_dict(scenario, source="test"), planner=_rules, policy=PolicyConfig(),
                   workdir=tmp_path, node_agents=NodeAgents(agents.run, pause_s=0.1))
    twin = agents.twin
    assert twin is not None
    reset = next(a for a in run.actions if a["runbook"] == "reset_gpu")
    assert reset["status"] == "failed"
    (request,) = twin.kube.list_objects("gpuresets")[0]
    assert request["status"]["phase"] == "Failed"
    assert "is in use by pid 777 (stray-profiler)" in request["status"]["message"]
    assert {i["hostname"]: i["status"] for i in run.incidents} == {PASSES: "escalated"}
    assert PASSES in run.cordoned_at_end
    assert not [line for line in (tmp_path / "nodes" / PASSES / "world.json.calls").read_text().splitlines()
                if "--gpu-reset" in line]
