"""The one call from the daemon into the agent graph: run an incident's thread as far as it goes now (up to its
soak or approval interrupt, or to the end), or resume it after a decision or a soak; then tell the notifier
what happened."""

from __future__ import annotations

import logging
from typing import Any

from connectors.kubernetes.errors import ClusterNotConfigured
from gpuops.wiring import Container

log = logging.getLogger(__name__)


def advance_incident(container: Container, incident_id: int, decision: dict[str, Any] | None = None) -> str:
    from gpuops.agent_wiring import resume_incident, start_incident  # the graph's libraries load on first use

    try:
        report = (resume_incident(container, incident_id, decision) if decision
                  else start_incident(container, incident_id))
    except ClusterNotConfigured as exc:  # detection-only installs: the incident waits for a human
        log.warning("no cluster configured: the agent does not plan; the incident waits for a human",
                    extra={"incident_id": incident_id, "error": str(exc)})
        return f"not planned: {exc}"
    log.info("agent step", extra={"incident_id": incident_id, "planner": report.planner,
                                  "outcome": report.outcome or ("held" if report.held else "waiting")})
    notifier = container.notifier
    try:
        if report.waiting_for:
            notifier.approval_requested(int(report.waiting_for["action_id"]))
        if decision:
            for execution in report.executions:
                notifier.progress(int(execution["action_id"]), str(execution.get("status", "")),
                                  str(execution.get("detail", "")))
    except Exception:  # a channel being down never stops the incident
        log.exception("the notifier failed", extra={"incident_id": incident_id})
    if report.waiting_for:
        return f"waiting for a decision on action {report.waiting_for['action_id']}"
    if report.held:
        return f"held: {report.held['runbook']} waits until {report.held['hold_until']}"
    return f"{report.outcome}: {report.reason}".strip(": ")
