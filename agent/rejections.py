"""Steps people rejected on an incident. When a person asks the agent to plan again after a rejection, the
incident's details carry the rejected steps (`replan.rejected`, with who rejected them and why): the planners
read them as context, and no planner may propose one of them again for that incident (see
agent.validation.check_action)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.actions import PlannedAction


def rejected(incident: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rejected steps an incident snapshot carries, oldest first ([] when nobody asked for a re-plan)."""
    replan = (incident.get("details") or {}).get("replan")
    steps = replan.get("rejected") if isinstance(replan, Mapping) else None
    return [dict(s) for s in steps if isinstance(s, Mapping)] if isinstance(steps, list) else []


def replan_reason(incident: Mapping[str, Any]) -> str:
    """What the person who asked for the re-plan said."""
    replan = (incident.get("details") or {}).get("replan")
    return str(replan.get("reason", "")) if isinstance(replan, Mapping) else ""


def _key(runbook: object, targets: object) -> tuple[str, tuple[str, ...]]:
    return str(runbook), tuple(sorted(str(t) for t in targets)) if isinstance(targets, list | tuple) else ()


def rejection_of(incident: Mapping[str, Any], action: PlannedAction) -> dict[str, Any] | None:
    """The earlier rejection of the same step (same runbook on the same targets), if people rejected it."""
    key = _key(action.runbook, list(action.targets))
    return next((s for s in rejected(incident) if _key(s.get("runbook"), s.get("targets")) == key), None)


def rejection_problem(incident: Mapping[str, Any], action: PlannedAction) -> list[str]:
    """[] unless `action` repeats a rejected step; else why it may not be proposed."""
    found = rejection_of(incident, action)
    if found is None:
        return []
    return [f"{action.runbook} on {', '.join(action.targets)} was rejected for this incident by "
            f"{found.get('by') or 'a person'} (action {found.get('action_id')}): propose a different step, or "
            "escalate_to_human"]
