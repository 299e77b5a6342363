"""The one call from the daemon into the agent graph. The graph (its entry point runs an incident up to its
approval interrupt and resumes it after a decision) is wired in here and nowhere else."""

from __future__ import annotations

import logging
from typing import Any

from gpuops.wiring import Container

log = logging.getLogger(__name__)


def advance_incident(container: Container, incident_id: int, decision: dict[str, Any] | None = None) -> str:
    """Run the incident's agent graph as far as it goes now. Until the graph is wired, incidents wait for a
    human in the dashboard; the step reports that instead of pretending to plan."""
    log.info("agent step", extra={"incident_id": incident_id, "decision": bool(decision)})
    return "agent not wired: the incident waits for a human"
