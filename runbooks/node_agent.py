"""Requests to the node agent (GPUReset, NodeReboot custom resources; see NODE_AGENT.md) and waiting on them."""

from __future__ import annotations

import re
from collections.abc import Callable

from connectors.kubernetes import NodeRequest
from runbooks.context import RunbookContext
from runbooks.cordon import action_tag
from runbooks.model import Plan, StepResult


def request_name(plan: Plan, ctx: RunbookContext, what: str) -> str:
    """A stable, DNS-1123 name for this plan's request: the same action of the same incident finds it again (a
    resumed or retried run, the verification), and another action with the same plan gets its own."""
    action = f"-a{ctx.action_id}" if ctx.action_id is not None else ""
    raw = f"gpuops-{what}-{ctx.request_label()}{action}-{action_tag(plan).split(':')[1]}"
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    return name[:63].rstrip("-")


def wait_request(ctx: RunbookContext, read: Callable[[str], NodeRequest], name: str, deadline_s: float) -> StepResult:
    """Poll the request until the node agent reports Succeeded or Failed, or the deadline passes."""
    last: list[NodeRequest] = []

    def finished() -> NodeRequest | None:
        request = read(name)
        last.append(request)
        return request if request.finished else None

    done = ctx.poll(deadline_s, finished)
    data = {"request": name, "phase": last[-1].phase if last else "Unknown"}
    if done is None:
        return StepResult(False, f"{name} still {data['phase']} after {deadline_s:g}s", data)
    if done.phase != "Succeeded":
        return StepResult(False, f"{name} {done.phase}: {done.message}", data)
    return StepResult(True, f"{name} Succeeded: {done.message}", data)
