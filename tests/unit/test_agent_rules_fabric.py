"""The rules planner on fabric incidents: a node whose link is down, flapping, degraded or whose HCA is lost is
cordoned, drained and gets a hardware ticket naming the HCA and port; symbol errors get the ticket alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.rules import fault_of
from tests.unit.test_agent_rules import NODE, plan_for, snapshot

FABRIC = {"device": "mlx5_3", "port": "1", "hca": 3}


@pytest.mark.parametrize(("condition", "fault", "runbooks"), [
    ("link_down", "ib_link_down", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("link_flap", "ib_link_flap", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("link_degraded", "ib_link_degraded", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("hca_lost", "nic_lost", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("symbol_errors", "ib_symbol_errors", ["open_hardware_ticket"]),
])
def test_fabric_incidents(condition: str, fault: str, runbooks: list[str], tmp_path: Path) -> None:
    incident = snapshot("fabric", gpu=None, evidence={**FABRIC, "condition": condition})
    assert fault_of(incident) == fault
    actions, _, request = plan_for(incident, tmp_path)
    assert [a.runbook for a in actions] == runbooks
    assert all(a.targets == (f"node/{NODE}",) for a in actions)
    assert all(request.check(a) == [] for a in actions)
    ticket = actions[-1]
    assert "HCA mlx5_3 port 1" in ticket.params["summary"] and ticket.params["fault"] == fault
    assert ticket.params["evidence"]["device"] == "mlx5_3" and ticket.params["gpu"] is None
